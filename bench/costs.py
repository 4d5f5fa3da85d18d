"""Costs benchmark (make bench-costs): GET /v1/costs over a tenant-month of LLM traffic.

Data: the realistic shape of the usage benchmark (`bench.datasets.seed_realistic_month`: one
tenant, 10,000 API keys of 2,000 users, 20 models, --events events over November 2026, rollups
built and folded), in a fresh database on the server of BENCH_DATABASE_URL, else DATABASE_URL,
else the embedded PostgreSQL; `--database URL` reuses one seeded before (`--keep`). Prices for
its 20 models on both meters, per 1,000,000 tokens, as an LLM gateway has them: every third
model's input graduated (the first 50M tokens of the month at the list price, the rest at 80%),
and one tenant override (the bench tenant pays 10% less for gpt-4o input).

Measured over HTTP against `python -m service serve` (one uvicorn worker), the whole month:
costs grouped by api_key_id with order_by=-cost&limit=100; by user_id; by model; by
user_id+model; and the LLM report (GET /v1/reports/llm) by model with daily windows (the
preset's other meters are created, without usage). Each 2 warm-up runs, then --runs timed
(p50/p95/max, ms, the whole response read). Goal: p95 <= 100 ms each. Checked: every costs
answer's total is the same (the month's cost does not depend on the grouping) and equals the
invoice preview's total within a cent per line (lines are rounded).

    make bench-costs ARGS="--events 1000000"
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m bench.costs --events 1000000 --keep
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx

from bench.common import bench_server_url, fresh_database, percentile, running_service
from bench.datasets import (
    REALISTIC_MODELS,
    LlmMonth,
    describe_month,
    seed_realistic_month,
)
from bench.usage import Params, iso, stats, timed
from service.db.url import asyncpg_dsn
from service.meters.presets import LLM_PRESET
from service.tenants.auth import generate_key

SECRET = "bench-secret"
PORT = 8742
GOAL_MS = 100.0
TENANT = "bench"
PRICES_FROM = datetime(2026, 1, 1, tzinfo=UTC)
# List prices per 1,000,000 tokens (input, output), most popular model first.
LIST_PRICES = [
    (Decimal("0.15"), Decimal("0.60")),
    (Decimal("3.00"), Decimal("15.00")),
    (Decimal("2.50"), Decimal("10.00")),
    (Decimal("0.10"), Decimal("0.40")),
    (Decimal("0.80"), Decimal("4.00")),
]


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    params: Params
    path: str = "/v1/costs"


@dataclass(slots=True)
class Result:
    query: Query
    samples: list[float]
    rows: int
    size: int

    @property
    def p95(self) -> float:
        return percentile(self.samples, 95)


async def create_prices(url: str) -> int:
    """Replace the benchmark meters' prices; returns how many there are."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        meters = {
            r["event_name"]: r["id"]
            for r in await connection.fetch("SELECT id, event_name FROM meters")
        }
        await connection.execute("DELETE FROM prices")
        # The LLM report needs every meter of the LLM preset; the data set has two of them.
        for preset in LLM_PRESET:
            await connection.execute(
                "INSERT INTO meters (event_name, name, unit, aggregation, billable, currency) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_name) DO NOTHING",
                preset.event_name,
                preset.name,
                preset.unit,
                preset.aggregation,
                preset.billable,
                "USD" if preset.priced else None,
            )
        rows: list[tuple[Any, ...]] = []
        for rank, model in enumerate(REALISTIC_MODELS):
            list_input, list_output = LIST_PRICES[rank % len(LIST_PRICES)]
            match = json.dumps({"model": model})
            tiers = "[]"
            if rank % 3 == 0:
                tiers = json.dumps(
                    [
                        {"up_to": "50000000", "unit_amount": str(list_input)},
                        {"up_to": None, "unit_amount": str(list_input * Decimal("0.8"))},
                    ]
                )
            rows.append((meters["input_tokens"], None, list_input, match, tiers))
            rows.append((meters["output_tokens"], None, list_output, match, "[]"))
            if model == "gpt-4o":
                rows.append(
                    (meters["input_tokens"], TENANT, list_input * Decimal("0.9"), match, "[]")
                )
        await connection.executemany(
            "INSERT INTO prices (id, meter_id, tenant_id, unit_amount, per_units, match, tiers, "
            "effective_from) VALUES ($1, $2, $3, $4, 1000000, $5::jsonb, $6::jsonb, $7)",
            [(uuid.uuid4(), *row[:4], row[4], PRICES_FROM) for row in rows],
        )
        return len(rows)
    finally:
        await connection.close()


async def create_key(url: str) -> str:
    key = generate_key(SECRET)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, scopes)"
            " VALUES ($1, 'bench', $2, $3, ARRAY['read', 'billing'])",
            uuid.uuid4(),
            key.prefix,
            key.key_hash,
        )
    finally:
        await connection.close()
    return key.plaintext


def queries(month: LlmMonth) -> list[Query]:
    utc: Params = [
        ("tenant_id", month.tenant_id),
        ("from", iso(month.start)),
        ("to", iso(month.end)),
    ]

    def by(*keys: str) -> Params:
        return [*utc, *(("group_by", key) for key in keys)]

    return [
        Query(
            "group_by=api_key_id, -cost, limit 100",
            [*by("api_key_id"), ("order_by", "-cost"), ("limit", 100)],
        ),
        Query("group_by=user_id", by("user_id")),
        Query("group_by=model", by("model")),
        Query("group_by=user_id,model", by("user_id", "model")),
        Query(
            "reports/llm group_by=model, window_size=day",
            [*by("model"), ("window_size", "day")],
            "/v1/reports/llm",
        ),
    ]


async def over_http(key: str, month: LlmMonth, runs: int) -> list[Result]:
    headers = {"Authorization": f"Bearer {key}"}
    results: list[Result] = []
    totals: set[str] = set()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=300) as client:
        for query in queries(month):
            body = b""

            async def run(query: Query = query) -> None:
                nonlocal body
                response = await client.get(query.path, params=query.params, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"{query.name}: {response.status_code} {response.text[:300]}"
                    )
                body = response.content

            samples = await timed(run, runs)
            answer = json.loads(body)
            if "total" in answer:
                totals.add(answer["total"])
            result = Result(query, samples, len(answer["rows"]), len(body))
            results.append(result)
            print(
                f"  {query.name:<40} rows {result.rows:>7,}  {len(body) / 1e6:6.2f} MB  "
                f"{stats(samples)}  goal {GOAL_MS:.0f}: "
                f"{'met' if result.p95 <= GOAL_MS else 'MISSED'}",
                flush=True,
            )
        period = month.start.strftime("%Y-%m")
        response = await client.get(
            f"/v1/tenants/{month.tenant_id}/invoices/preview",
            params={"period": period},
            headers=headers,
        )
        response.raise_for_status()
        [invoice] = response.json()
    if len(totals) != 1:
        raise AssertionError(f"the month's total depends on the grouping: {sorted(totals)}")
    total = Decimal(totals.pop())
    difference = abs(total - Decimal(invoice["total"]))
    tolerance = Decimal("0.005") * len(invoice["lines"])
    verdict = "agrees" if difference <= tolerance else "DIFFERS"
    print(
        f"  total {total} (every grouping); invoice {invoice['total']} in "
        f"{len(invoice['lines'])} rounded lines: {verdict}",
        flush=True,
    )
    if difference > tolerance:
        raise AssertionError(f"costs total {total} vs invoice {invoice['total']}")
    return results


def run(url: str, args: argparse.Namespace, seed: bool) -> list[Result]:
    if seed:
        print(f"=== seeding {args.events:,} events (realistic shape, 30 days) ...", flush=True)
        started = time.perf_counter()
        month = asyncio.run(seed_realistic_month(asyncpg_dsn(url), args.events, tenant_id=TENANT))
        print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)
    else:
        month = asyncio.run(describe_month(asyncpg_dsn(url), "realistic", TENANT))
    prices = asyncio.run(create_prices(url))
    print(f"  {month.events:,} events; {prices} prices for {len(REALISTIC_MODELS)} models")
    key = asyncio.run(create_key(url))
    print(f"\n  Over HTTP, one uvicorn worker (ms; {args.runs} runs after 2 warm-up):", flush=True)
    with running_service(url, PORT, 1, METERING_SECRET_KEY=SECRET):
        return asyncio.run(over_http(key, month, args.runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--database", help="a database seeded before (with --keep): no seeding")
    args = parser.parse_args()

    if args.database:
        results = run(args.database, args, seed=False)
    else:
        with fresh_database(bench_server_url(), keep=args.keep) as url:
            results = run(url, args, seed=True)
    print(f"\n=== Summary (ms; goal p95 <= {GOAL_MS:.0f})")
    header = f"  {'query':<40} {'rows':>7} {'MB':>6} {'p50':>8} {'p95':>8}  met"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in results:
        print(
            f"  {r.query.name:<40} {r.rows:>7,} {r.size / 1e6:>6.2f} "
            f"{percentile(r.samples, 50):>8.1f} {r.p95:>8.1f}  "
            f"{'met' if r.p95 <= GOAL_MS else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
