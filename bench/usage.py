"""Usage query benchmark (make bench-usage): a tenant-month of LLM traffic, queried.

Data: `bench.datasets.seed_llm_month` in a fresh database (migrated to head) on the server of
BENCH_DATABASE_URL, else DATABASE_URL, else the embedded PostgreSQL: one tenant, 30 days,
--events events (default 10M) over 2 meters, 5 models, 1000 users, 50 API keys. With that
many users and keys, the full-key 15-minute rollups hold about one row per event; the model
rollups a few rows per 15 minutes.

Measured, --runs times each after warm-up (p50/p95/max, milliseconds):
  - in process: UsageService.usage(), as the endpoint calls it (validation, windows, SQL,
    shaping) for the month grouped by model (all meters, one meter, by day) and by user_id;
  - over HTTP: GET /v1/usage against `python -m service serve` (one worker), grouped by model;
  - the same month-by-model aggregate computed over the raw events, for the ratio; its
    answer is checked equal to the service's.

    make bench-usage ARGS="--events 2000000"
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m bench.usage --events 10000000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx

from bench.common import bench_server_url, fresh_database, percentile, running_service
from bench.datasets import LlmMonth, seed_llm_month
from service.common.auth import Principal
from service.db.session import create_engine
from service.db.url import asyncpg_dsn
from service.settings import Settings
from service.tenants.auth import generate_key
from service.usage.schemas import MetersUsageOut, UsageQuery
from service.usage.service import UsageService

SECRET = "bench-secret"
PORT = 8741
ADMIN = Principal(key_id="bench", name="bench", scopes=frozenset({"admin"}), tenant_id=None)
GOAL_P95_MS = 50.0
GOAL_RATIO = 100.0
# (meter, model) -> (sum, count, last): the month-by-model answer, compared with the raw scan.
ByModel = dict[tuple[str, str | None], tuple[Decimal, int, str | None]]

RAW_BY_MODEL_SQL = """
SELECT m.event_name, e.model, sum(coalesce(e.value, 0)) AS sum, count(*) AS count,
       (array_agg(e.value ORDER BY e.ts DESC, e.id DESC))[1] AS last
FROM events e JOIN meters m ON m.id = e.meter_id
WHERE e.tenant_id = $1 AND e.ts >= $2 AND e.ts < $3
GROUP BY 1, 2
"""


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def timed(run: Callable[[], Awaitable[Any]], runs: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        await run()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def line(name: str, samples: list[float]) -> str:
    return (
        f"  {name:<56} p50 {percentile(samples, 50):9.1f}  p95 {percentile(samples, 95):9.1f}"
        f"  max {max(samples):9.1f}  (n={len(samples)})"
    )


async def in_process(
    url: str, month: LlmMonth, runs: int
) -> tuple[dict[str, list[float]], ByModel]:
    """Times the queries; returns the samples and the month-by-model answer."""
    settings = Settings(database_url=url, json_logs=False, log_level="WARNING")
    engine = create_engine(settings, url)
    service = UsageService(engine)
    month_range = {"tenant_id": month.tenant_id, "start": iso(month.start), "end": iso(month.end)}
    queries = {
        "month, group_by=model (all meters)": (UsageQuery(**month_range, group_by=["model"]), runs),
        "month, group_by=model, meter=input_tokens": (
            UsageQuery(**month_range, meter="input_tokens", group_by=["model"]),
            runs,
        ),
        "month, window_size=day, group_by=model (all meters)": (
            UsageQuery(**month_range, window_size="day", group_by=["model"]),
            runs,
        ),
        "month, group_by=user_id (all meters; full-key rollups)": (
            UsageQuery(**month_range, group_by=["user_id"]),
            max(3, runs // 10),
        ),
    }
    results: dict[str, list[float]] = {}
    try:
        for name, (query, n) in queries.items():

            async def run(query: UsageQuery = query) -> Any:
                return await service.usage(ADMIN, query)

            results[name] = await timed(run, n, warmup=1 if n < runs else 2)
            print(line(name, results[name]), flush=True)
        answer = await service.usage(ADMIN, queries["month, group_by=model (all meters)"][0])
    finally:
        await engine.dispose()
    assert isinstance(answer, MetersUsageOut)
    by_model = {
        (block.meter, row.group["model"]): (Decimal(row.sum), row.count, row.last)
        for block in answer.meters
        for row in block.rows
    }
    return results, by_model


async def raw_scan(url: str, month: LlmMonth, runs: int, expected: ByModel) -> list[float]:
    """Times the month-by-model aggregate over raw events; checks it equals `expected`."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        records: list[asyncpg.Record] = []

        async def run() -> None:
            nonlocal records
            records = await connection.fetch(
                RAW_BY_MODEL_SQL, month.tenant_id, month.start, month.end
            )

        samples = await timed(run, runs, warmup=1)
    finally:
        await connection.close()
    raw = {
        (r["event_name"], r["model"]): (
            r["sum"],
            r["count"],
            None if r["last"] is None else format(r["last"], "f"),
        )
        for r in records
    }
    if raw != expected:
        raise AssertionError("the usage service and the raw scan disagree")
    return samples


async def create_read_key(url: str) -> str:
    key = generate_key(SECRET)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, scopes)"
            " VALUES ($1, 'bench', $2, $3, ARRAY['read'])",
            uuid.uuid4(),
            key.prefix,
            key.key_hash,
        )
    finally:
        await connection.close()
    return key.plaintext


async def over_http(key: str, month: LlmMonth, runs: int) -> list[float]:
    params = {
        "tenant_id": month.tenant_id,
        "from": iso(month.start),
        "to": iso(month.end),
        "group_by": "model",
    }
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=60) as client:

        async def run() -> None:
            response = await client.get("/v1/usage", params=params, headers=headers)
            response.raise_for_status()

        return await timed(run, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--raw-runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP measurement")
    args = parser.parse_args()

    server = bench_server_url()
    with fresh_database(server, keep=args.keep) as url:
        print(f"Seeding {args.events:,} events (one tenant, 30 days) ...", flush=True)
        started = time.perf_counter()
        month = asyncio.run(seed_llm_month(asyncpg_dsn(url), args.events))
        print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)
        counts = asyncio.run(_table_counts(url))
        print(
            "  rows: " + ", ".join(f"{table} {count:,}" for table, count in counts.items()),
            flush=True,
        )

        print(f"\nIn process, UsageService.usage() (ms, {args.runs} runs):", flush=True)
        results, by_model = asyncio.run(in_process(url, month, args.runs))
        headline = results["month, group_by=model (all meters)"]

        print(f"\nRaw events, the same month by model (ms, {args.raw_runs} runs):", flush=True)
        raw = asyncio.run(raw_scan(url, month, args.raw_runs, by_model))
        print(line("GROUP BY meter, model over events", raw), flush=True)
        print("  answers equal: yes", flush=True)

        http: list[float] = []
        if not args.no_http:
            key = asyncio.run(create_read_key(url))
            with running_service(url, PORT, 1, METERING_SECRET_KEY=SECRET):
                http = asyncio.run(over_http(key, month, args.runs))
            print("\nOver HTTP, one uvicorn worker (ms):", flush=True)
            print(line("GET /v1/usage?group_by=model (month, all meters)", http), flush=True)

        p95 = percentile(headline, 95)
        ratio = statistics.median(raw) / statistics.median(headline)
        print(
            f"\nSummary: {args.events:,} events; month by model p50 "
            f"{percentile(headline, 50):.1f} ms, p95 {p95:.1f} ms "
            f"(goal <= {GOAL_P95_MS:.0f}: {'met' if p95 <= GOAL_P95_MS else 'MISSED'}); "
            f"raw scan p50 {statistics.median(raw):.0f} ms: {ratio:,.0f}x faster "
            f"(goal >= {GOAL_RATIO:.0f}x: {'met' if ratio >= GOAL_RATIO else 'MISSED'})",
            flush=True,
        )


async def _table_counts(url: str) -> dict[str, int]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return {
            table: await connection.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("events", "rollups", "model_rollups")
        }
    finally:
        await connection.close()


if __name__ == "__main__":
    main()
