# Two commands on a fresh machine: `make run` and `make test`. `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run stop test lint format openapi lock bench bench-ingest bench-budgets bench-usage bench-costs bench-invoice bench-retention bench-client bench-cancel clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml clients/python/pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip install --quiet --no-deps -e ./clients/python
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the locked dependencies

run: $(STAMP) ## Serve the API on :8000 (embedded PostgreSQL under .data/ unless DATABASE_URL is set)
	$(BIN)/python -m service migrate
	@echo "Get the first admin key (in another terminal): $(BIN)/python -m service keys create --scope admin --name bootstrap"
	$(BIN)/python -m service serve

stop: $(STAMP) ## Stop the embedded PostgreSQL that make run started (its data under .data/ stays)
	$(BIN)/python -m service db stop

test: $(STAMP) ## Run the whole test suite (TEST_DATABASE_URL, else Docker, else embedded PostgreSQL)
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff format --check, ruff check, mypy
	$(BIN)/ruff format --check service tests alembic bench clients
	$(BIN)/ruff check service tests alembic bench clients
	$(BIN)/mypy

format: $(STAMP) ## Apply ruff formatting and fixes
	$(BIN)/ruff format service tests alembic bench clients
	$(BIN)/ruff check --fix service tests alembic bench clients

openapi: $(STAMP) ## Regenerate openapi/openapi.json from the code
	$(BIN)/python -m service openapi --output openapi/openapi.json

# A lock names packages and versions only: never the package indexes or wheel directories of
# the machine that compiled it (pip's own configuration supplies those where it runs).
PIP_COMPILE := $(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links

lock: ## Re-pin requirements.lock (dev, make install) and requirements-runtime.lock (the image)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip-tools
	$(PIP_COMPILE) --extra dev --extra embedded -o requirements.lock pyproject.toml
	$(PIP_COMPILE) -o requirements-runtime.lock pyproject.toml

bench: bench-ingest bench-budgets bench-usage bench-costs bench-invoice bench-retention bench-client bench-cancel ## Every benchmark (long: seeds 10M events twice)

bench-ingest: $(STAMP) ## Ingestion benchmark: P1 batch over HTTP vs direct SQL, P2 single (wrk), RSS (ARGS="--batches 100")
	$(BIN)/python -m bench.ingest $(ARGS)

bench-usage: $(STAMP) ## Usage queries over HTTP, realistic + adversarial 10M-event months: p50/p95 vs goals, checks, storage (ARGS="--events 1000000 --shape realistic")
	$(BIN)/python -m bench.usage $(ARGS)

bench-costs: $(STAMP) ## Costs over HTTP, realistic 10M-event month with LLM prices: p50/p95 vs 100 ms (ARGS="--events 1000000")
	$(BIN)/python -m bench.costs $(ARGS)

bench-invoice: $(STAMP) ## Invoice benchmark: preview p50/p95 for a tenant-month of 10M events (ARGS="--events 1000000")
	$(BIN)/python -m bench.invoice $(ARGS)

bench-retention: $(STAMP) ## Retention benchmark: delete N expired events (ARGS="--events 1000000 --with-ingest")
	$(BIN)/python -m bench.retention $(ARGS)

bench-budgets: $(STAMP) ## Budget check p50/p99 under P1 ingestion with 1,000 budgets; webhook fan-out rate and p99 delay (ARGS="--messages 10000", "--cost" for cost budgets)
	$(BIN)/python -m bench.budgets $(ARGS)

bench-cancel: $(STAMP) ## Cancel cost in the database (delta vs cube reset), reads and fold after a reset (ARGS="--events 1000000 --cancels 200")
	$(BIN)/python -m bench.cancel $(ARGS)

bench-client: $(STAMP) ## Python client: one Tracker into a 2-worker server, events/s and client CPU per 1,000 events (ARGS="--events 300000")
	$(BIN)/python -m bench.client $(ARGS)

clean: ## Stop the embedded PostgreSQL, then remove the venv and local data
	-[ -x $(BIN)/python ] && $(BIN)/python -m service db stop
	rm -rf $(VENV) .data
