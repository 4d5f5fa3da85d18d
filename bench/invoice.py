"""Invoice benchmark (make bench-invoice): latency of an invoice preview for one tenant-month.

Data (seeded into a fresh database, migrated to head, on the server of BENCH_DATABASE_URL, else
DATABASE_URL, else the embedded PostgreSQL): 10 tenants, October 2026, --events raw events
(default 10M, spread evenly over the tenants and the month: 1M per tenant-month), the shape of
the ingestion benchmark's: 1000 users, 50 API keys, 20 projects, 5 models, input tokens with a
`region` dimension (3 regions). Events are generated server-side (INSERT ... SELECT from
generate_series), then rollups are built per tenant with the service's own rebuild SQL.

Price book: LLM prices per model per 1M tokens for input, output and cache reads (one model
unpriced, a mid-month price change, a contract override for the measured tenant), graduated
API calls, seats (`last`). With --project-price one more price matches on project_id, so the
output meter has to be read from the full-key rollups instead of the model rollups.

Measured: GET /v1/tenants/{tenant}/invoices/preview?period=2026-10 against `python -m service
serve` (one worker), sequentially, after warm-up; p50/p95/max printed. The database is dropped
at the end unless --keep; --database URL reuses a kept one (no seeding).

    make bench-invoice ARGS="--events 1000000"
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m bench.invoice --events 10000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from bench.common import bench_server_url, fresh_database, percentile, running_service
from service.db.url import asyncpg_dsn
from service.rollups.upkeep import rebuild_rollups
from service.tenants.auth import generate_key

SECRET = "bench-secret"
TENANTS = [f"tenant{i:02d}" for i in range(10)]
MEASURED = TENANTS[0]
PERIOD = "2026-10"
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
PRICE_CHANGE = datetime(2026, 10, 16, tzinfo=UTC)
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-70b", "mistral-large"]
REGIONS = ["eu", "us", "apac"]
METERS = [
    # event_name, name, aggregation, dimensions
    ("input_tokens", "Input tokens", "sum", ["region"]),
    ("output_tokens", "Output tokens", "sum", []),
    ("cache_read_tokens", "Cache read tokens", "sum", []),
    ("api_calls", "API calls", "count", []),
    ("seats", "Seats", "last", []),
]
# Per 1M tokens: input, output, cache read. llama-70b has no price (unpriced lines).
LLM_PRICES = {
    "gpt-4o": ("2.50", "10.00", "1.25"),
    "gpt-4o-mini": ("0.15", "0.60", "0.075"),
    "claude-sonnet": ("3.00", "15.00", "0.30"),
    "mistral-large": ("2.00", "6.00", "0.20"),
}
CHUNK = 1_000_000

SEED_EVENTS_SQL = """
INSERT INTO events (tenant_id, meter_id, idempotency_key, payload_hash, value, ts,
                    project_id, api_key_id, user_id, model, dimensions)
SELECT t.tenant_id, t.meter_id, 'b' || i, decode(md5(i::text), 'hex'),
       CASE WHEN t.meter_id = $9 THEN NULL
            WHEN t.meter_id = $10 THEN (1 + i % 40)::numeric
            ELSE (1 + (i * 7919) % 5000)::numeric END,
       $4::timestamptz + make_interval(secs => i * $5::float8),
       'project' || ((i / 7) % 20), 'key' || ((i / 3) % 50), 'user' || ((i * 31) % 1000),
       ($3::text[])[1 + (i / 11) % cardinality($3::text[])],
       CASE WHEN t.meter_id = $8
            THEN jsonb_build_object('region',
                                    ($11::text[])[1 + (i / 13) % cardinality($11::text[])])
            ELSE '{}'::jsonb END
FROM generate_series($6::bigint, $7::bigint - 1) AS i,
     LATERAL (SELECT ($1::text[])[1 + i % cardinality($1::text[])] AS tenant_id,
                     ($2::int[])[1 + (i / cardinality($1::text[])) % cardinality($2::int[])]
                         AS meter_id) AS t
"""


def _price(
    meter_id: int, unit_amount: str, *, per_units: str = "1", **fields: Any
) -> tuple[Any, ...]:
    return (
        uuid.uuid4(),
        meter_id,
        fields.get("tenant_id"),
        unit_amount,
        per_units,
        json.dumps(fields.get("match", {})),
        json.dumps(fields.get("tiers", [])),
        fields.get("effective_from", SINCE),
        fields.get("effective_to"),
    )


async def seed(url: str, events: int) -> str:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.executemany(
            "INSERT INTO tenants (id, name, currency, timezone) VALUES ($1, $1, 'USD', 'UTC')",
            [(tenant,) for tenant in TENANTS],
        )
        ids: dict[str, int] = {}
        for event_name, name, aggregation, dimensions in METERS:
            ids[event_name] = await connection.fetchval(
                "INSERT INTO meters (event_name, name, unit, aggregation, dimensions, currency,"
                " has_events) VALUES ($1, $2, 'units', $3, $4, 'USD', true) RETURNING id",
                event_name,
                name,
                aggregation,
                dimensions,
            )
        prices = []
        for model, (input_, output, cache_read) in LLM_PRICES.items():
            match = {"model": model}
            if model == "gpt-4o":
                prices.append(
                    _price(ids["input_tokens"], input_, per_units="1000000", match=match,
                           effective_to=PRICE_CHANGE)
                )  # fmt: skip
                prices.append(
                    _price(ids["input_tokens"], "2.00", per_units="1000000", match=match,
                           effective_from=PRICE_CHANGE)
                )  # fmt: skip
            else:
                prices.append(_price(ids["input_tokens"], input_, per_units="1000000", match=match))
            prices.append(_price(ids["output_tokens"], output, per_units="1000000", match=match))
            prices.append(
                _price(ids["cache_read_tokens"], cache_read, per_units="1000000", match=match)
            )
        prices.append(
            _price(ids["output_tokens"], "12.00", per_units="1000000",
                   match={"model": "claude-sonnet"}, tenant_id=MEASURED)
        )  # fmt: skip
        tiers = [
            {"up_to": "1000", "unit_amount": "0"},
            {"up_to": "100000", "unit_amount": "0.002"},
            {"up_to": None, "unit_amount": "0.001"},
        ]
        prices.append(_price(ids["api_calls"], "0", tiers=tiers))
        prices.append(_price(ids["seats"], "8.00"))
        await connection.executemany(
            "INSERT INTO prices (id, meter_id, tenant_id, unit_amount, per_units, match, tiers,"
            " effective_from, effective_to)"
            " VALUES ($1, $2, $3, $4::numeric, $5::numeric, $6::jsonb, $7::jsonb, $8, $9)",
            prices,
        )

        key = generate_key(SECRET)
        await connection.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, scopes)"
            " VALUES ($1, 'bench', $2, $3, ARRAY['billing'])",
            uuid.uuid4(),
            key.prefix,
            key.key_hash,
        )

        step = (END - START).total_seconds() / events
        started = time.perf_counter()
        for first in range(0, events, CHUNK):
            await connection.execute(
                SEED_EVENTS_SQL,
                TENANTS,
                [ids[m[0]] for m in METERS],
                MODELS,
                START,
                step,
                first,
                min(first + CHUNK, events),
                ids["input_tokens"],
                ids["api_calls"],
                ids["seats"],
                REGIONS,
            )
            done = min(first + CHUNK, events)
            print(f"  {done:,} events ({time.perf_counter() - started:.0f} s)", flush=True)
        rolled = time.perf_counter()
        for tenant in TENANTS:
            async with connection.transaction():
                await rebuild_rollups(connection, tenant, START, END)
        print(f"  rollups built in {time.perf_counter() - rolled:.0f} s", flush=True)
        await connection.execute("VACUUM ANALYZE")
        return key.plaintext
    finally:
        await connection.close()


async def add_project_price(url: str) -> None:
    """A price matching on project_id: the output meter is then read from the full rollups."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        meter_id = await connection.fetchval(
            "SELECT id FROM meters WHERE event_name = 'output_tokens'"
        )
        match = json.dumps({"model": "gpt-4o", "project_id": "project1"})
        if not await connection.fetchval(
            "SELECT count(*) FROM prices WHERE match = $1::jsonb", match
        ):
            await connection.execute(
                "INSERT INTO prices (id, meter_id, unit_amount, per_units, match, effective_from)"
                " VALUES ($1, $2, 8, 1000000, $3::jsonb, $4)",
                uuid.uuid4(),
                meter_id,
                match,
                SINCE,
            )
    finally:
        await connection.close()


async def billing_key(url: str) -> str:
    """A fresh billing key in a kept database (keys are shown once)."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        key = generate_key(SECRET)
        await connection.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, scopes)"
            " VALUES ($1, 'bench', $2, $3, ARRAY['billing'])",
            uuid.uuid4(),
            key.prefix,
            key.key_hash,
        )
        return key.plaintext
    finally:
        await connection.close()


async def describe(url: str) -> str:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        counts = []
        for table in ("events", "rollups", "model_rollups"):
            exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
            if not exists:
                continue
            time_column = "ts" if table == "events" else "bucket_start"
            count = await connection.fetchval(
                f"SELECT count(*) FROM {table} WHERE tenant_id = $1"
                f" AND {time_column} >= $2 AND {time_column} < $3",
                MEASURED,
                START,
                END,
            )
            counts.append(f"{count:,} {table}")
        total = await connection.fetchval("SELECT count(*) FROM events")
        return f"{total:,} events in all; {MEASURED} {PERIOD}: " + ", ".join(counts)
    finally:
        await connection.close()


def measure(base: str, key: str, warmup: int, requests: int) -> tuple[list[float], Any]:
    url = f"{base}/v1/tenants/{MEASURED}/invoices/preview"
    headers = {"Authorization": f"Bearer {key}"}
    samples: list[float] = []
    body: Any = None
    with httpx.Client(timeout=60) as client:
        for index in range(warmup + requests):
            started = time.perf_counter()
            response = client.get(url, params={"period": PERIOD}, headers=headers)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"preview answered {response.status_code}: {response.text}")
            if index >= warmup:
                samples.append(elapsed)
            body = response.json()
    return samples, body


@contextmanager
def database(args: argparse.Namespace) -> Iterator[tuple[str, str | None]]:
    if args.database:
        yield args.database, None
        return
    with fresh_database(bench_server_url(), keep=args.keep) as url:
        print(f"Seeding {args.events:,} events over {len(TENANTS)} tenants, {PERIOD} ...")
        started = time.perf_counter()
        key = asyncio.run(seed(url, args.events))
        print(f"Seeded in {time.perf_counter() - started:.0f} s")
        yield url, key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--port", type=int, default=8793)
    parser.add_argument("--project-price", action="store_true", help="add a project price")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--database", help="reuse this (kept) database instead of seeding")
    args = parser.parse_args()

    with database(args) as (url, key):
        key = key or asyncio.run(billing_key(url))
        if args.project_price:
            asyncio.run(add_project_price(url))
        print(asyncio.run(describe(url)))
        env = {"METERING_SECRET_KEY": SECRET}
        with running_service(url, args.port, 1, **env):
            samples, drafts = measure(
                f"http://127.0.0.1:{args.port}", key, args.warmup, args.requests
            )
        lines = sum(len(draft["lines"]) for draft in drafts)
        totals = ", ".join(f"{d['total']} {d['currency']}" for d in drafts)
        print(f"Invoice: {len(drafts)} draft(s), {lines} lines, total {totals}")
        p50, p95 = percentile(samples, 50), percentile(samples, 95)
        verdict = "meets" if p95 <= 100 else "misses"
        print(
            f"Preview {MEASURED} {PERIOD} over HTTP ({args.requests} requests, one worker): "
            f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(samples):.1f} ms "
            f"({verdict} the 100 ms p95 goal)"
        )


if __name__ == "__main__":
    main()
