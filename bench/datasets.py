"""Data sets the benchmarks share.

`seed_llm_month` fills a migrated database with one tenant's month of LLM gateway traffic:
raw events by COPY (asyncpg `copy_records_to_table`, generated in time order so every index
of `events` is appended to), then the rollups and model rollups built day by day with the
service's own rebuild SQL (`rebuild_rollups`: the same aggregation as ingestion), then VACUUM
ANALYZE. 10M events take a few minutes on a laptop-class machine.

    from bench.datasets import seed_llm_month
    month = await seed_llm_month(dsn, 1_000_000)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from service.rollups.upkeep import rebuild_rollups

MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-70b", "mistral-large")
# event_name, display name, aggregation, typical value range
LLM_METERS = (
    ("input_tokens", "Input tokens", "sum", 4000),
    ("output_tokens", "Output tokens", "sum", 1500),
)
EVENT_COLUMNS = (
    "tenant_id",
    "meter_id",
    "idempotency_key",
    "payload_hash",
    "value",
    "ts",
    "project_id",
    "api_key_id",
    "user_id",
    "model",
    "dimensions",
)
# Benchmarks never re-send events, so a constant stands in for the canonical payload hash.
PAYLOAD_HASH = bytes(32)


@dataclass(frozen=True, slots=True)
class LlmMonth:
    tenant_id: str
    start: datetime
    end: datetime
    events: int
    meter_ids: dict[str, int]


async def seed_llm_month(
    dsn: str,
    events: int = 10_000_000,
    *,
    tenant_id: str = "bench",
    start: datetime = datetime(2026, 10, 1, tzinfo=UTC),
    days: int = 30,
    users: int = 1000,
    api_keys: int = 50,
    projects: int = 20,
    models: Sequence[str] = MODELS,
    chunk: int = 200_000,
    seed: int = 7,
    progress: Callable[[str], None] = print,
) -> LlmMonth:
    """One tenant (UTC), the LLM meters, `events` events spread evenly over `days` days from
    `start`: each a random meter, model, user and API key (a key belongs to a project), a
    random token count. Idempotency keys are `llm-<n>`. Returns what was seeded."""
    end = start + timedelta(days=days)
    rng = random.Random(seed)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO tenants (id, name, currency, timezone) VALUES ($1, $1, 'USD', 'UTC') "
            "ON CONFLICT (id) DO NOTHING",
            tenant_id,
        )
        meter_ids: dict[str, int] = {}
        for event_name, name, aggregation, _ in LLM_METERS:
            meter_ids[event_name] = await connection.fetchval(
                "INSERT INTO meters (event_name, name, unit, aggregation, currency, has_events) "
                "VALUES ($1, $2, 'tokens', $3, 'USD', true) "
                "ON CONFLICT (event_name) DO UPDATE SET has_events = true RETURNING id",
                event_name,
                name,
                aggregation,
            )
        meters = [(meter_ids[m[0]], m[3]) for m in LLM_METERS]
        user_names = [f"user{i:04d}" for i in range(users)]
        key_names = [f"key{i:02d}" for i in range(api_keys)]
        project_of = {key: f"project{i % projects:02d}" for i, key in enumerate(key_names)}
        step_us = (end - start) / timedelta(microseconds=1) / max(events, 1)

        started = time.perf_counter()
        reported = 0
        for first in range(0, events, chunk):
            count = min(chunk, events - first)
            records = _chunk(
                rng, tenant_id, first, count, start, step_us, meters, user_names, key_names,
                project_of, list(models),
            )  # fmt: skip
            await connection.copy_records_to_table(
                "events", records=records, columns=list(EVENT_COLUMNS)
            )
            done = first + count
            if done - reported >= 1_000_000 or done == events:
                reported = done
                elapsed = time.perf_counter() - started
                progress(f"  {done:>12,} events copied ({elapsed:.0f} s, {done / elapsed:,.0f}/s)")

        rolled = time.perf_counter()
        await connection.execute("SET work_mem = '256MB'")
        day = start
        while day < end:
            following = min(day + timedelta(days=1), end)
            async with connection.transaction():
                await rebuild_rollups(connection, tenant_id, day, following)
            day = following
        progress(f"  rollups and model rollups built ({time.perf_counter() - rolled:.0f} s)")
        vacuumed = time.perf_counter()
        await connection.execute("VACUUM ANALYZE events, rollups, model_rollups")
        progress(f"  vacuum analyze ({time.perf_counter() - vacuumed:.0f} s)")
        return LlmMonth(tenant_id, start, end, events, meter_ids)
    finally:
        await connection.close()


def _chunk(
    rng: random.Random,
    tenant_id: str,
    first: int,
    count: int,
    start: datetime,
    step_us: float,
    meters: list[tuple[int, int]],
    users: list[str],
    keys: list[str],
    project_of: dict[str, str],
    models: list[str],
) -> list[tuple[Any, ...]]:
    """Events first..first+count-1 in time order (event n falls in [n, n+1) steps)."""
    randoms = [rng.random() for _ in range(count)]
    meter_picks = rng.choices(meters, k=count)
    key_picks = rng.choices(keys, k=count)
    user_picks = rng.choices(users, k=count)
    model_picks = rng.choices(models, k=count)
    records = []
    for offset in range(count):
        n = first + offset
        meter_id, top = meter_picks[offset]
        key = key_picks[offset]
        records.append(
            (
                tenant_id,
                meter_id,
                f"llm-{n:010d}",
                PAYLOAD_HASH,
                Decimal(1 + int(randoms[offset] * 7919) % top),
                start + timedelta(microseconds=int((n + randoms[offset]) * step_us)),
                project_of[key],
                key,
                user_picks[offset],
                model_picks[offset],
                "{}",
            )
        )
    return records


def main() -> None:
    """Seed a database given on the command line (for reuse outside a benchmark)."""
    import argparse

    from service.db.url import asyncpg_dsn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("database_url")
    parser.add_argument("--events", type=int, default=10_000_000)
    args = parser.parse_args()
    asyncio.run(seed_llm_month(asyncpg_dsn(args.database_url), args.events))


if __name__ == "__main__":
    main()
