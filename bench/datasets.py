"""Data sets the benchmarks share: one tenant's month of LLM gateway traffic, in two shapes.

- `seed_llm_month`, the *adversarial* shape (today's data): 1,000 users, 50 API keys (key k in
  project k % 20) and 5 models, each drawn uniformly and independently per event, so almost
  every (user, key, model) combination occurs in every 15-minute bucket and the full-key
  rollups hold about one row per event.
- `seed_realistic_month`, the *realistic* shape: 10,000 API keys, each owned by one user (key
  k belongs to user k % 2,000) in one project (key k in project k % 50, so all of a user's keys
  share a project), project p in org p % 5; 20 models. Key popularity is Zipf with exponent 1.1
  over a random ranking of the keys (a few keys dominate; every key is used at least once when
  there are at least as many events as keys: 10,000 random events are given one key each).
  The model of an event is drawn independently, also Zipf 1.1 over the 20 models: real
  gateways have a few dominant models and a long tail.

Both: two sum meters (input_tokens, output_tokens; each event is one of them, at random),
events spread evenly over `days` days from `start` (by default 30 days from 2026-11-01, one
whole UTC calendar month), a random token count. Raw events go in by COPY (asyncpg
`copy_records_to_table`, generated in time order so every index of `events` is appended to);
then `build_rollups` builds the rollups day by day with the service's own rebuild SQL
(`rebuild_rollups`: the same aggregation as ingestion), folds them into the coarser levels
(`service.rollups.fold.fold_rollups`) and runs VACUUM ANALYZE on
events and every rollup table. 10M events take a few minutes on a laptop-class machine.

    from bench.datasets import seed_llm_month, seed_realistic_month
    month = await seed_realistic_month(dsn, 1_000_000)
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import asyncpg

from service.rollups.fold import fold_rollups
from service.rollups.upkeep import rebuild_rollups

MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-70b", "mistral-large")
# The realistic shape's models, most popular first (Zipf rank = position).
REALISTIC_MODELS = (
    "gpt-4o-mini",
    "claude-sonnet-4",
    "gpt-4o",
    "gemini-2.0-flash",
    "claude-haiku-3.5",
    "llama-3.3-70b",
    "gpt-4.1",
    "o3-mini",
    "mistral-large",
    "deepseek-v3",
    "gemini-2.5-pro",
    "claude-opus-4",
    "qwen-2.5-72b",
    "gpt-4.1-nano",
    "command-r-plus",
    "llama-3.1-8b",
    "mixtral-8x22b",
    "deepseek-r1",
    "o1",
    "phi-4",
)
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
    "org_id",
    "project_id",
    "api_key_id",
    "user_id",
    "model",
    "dimensions",
)
# Benchmarks never re-send events, so a constant stands in for the canonical payload hash.
PAYLOAD_HASH = bytes(32)
# The default month: a whole UTC calendar month (November has 30 days).
MONTH_START = datetime(2026, 11, 1, tzinfo=UTC)
# Rollup tables are found by name, so levels the service adds are covered without a change here.
ROLLUP_TABLES_SQL = """
SELECT tablename FROM pg_tables
WHERE schemaname = current_schema()
  AND (starts_with(tablename, 'rollup') OR starts_with(tablename, 'model_rollup'))
ORDER BY tablename
"""

# One event's attribution: (org_id, project_id, api_key_id, user_id, model).
Attribution = tuple[str | None, str, str, str, str]
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class LlmMonth:
    tenant_id: str
    start: datetime
    end: datetime
    events: int
    meter_ids: dict[str, int]
    shape: str = "adversarial"
    # The user with the most events (ties: the smallest id).
    busiest_user: str | None = None
    # Seconds spent per seeding phase (copy, rollups, fold, vacuum) and rows folded.
    timings: dict[str, float] = field(default_factory=dict)
    folded: int = 0


async def rollup_tables(connection: asyncpg.Connection) -> list[str]:
    """Every table whose name starts with 'rollup' or 'model_rollup'."""
    return [record["tablename"] for record in await connection.fetch(ROLLUP_TABLES_SQL)]


class _Shape(Protocol):
    def picks(self, rng: random.Random, first: int, count: int) -> list[Attribution]: ...


class _Adversarial:
    """Users, keys and models drawn uniformly and independently (today's data)."""

    def __init__(self, users: int, api_keys: int, projects: int, models: Sequence[str]) -> None:
        self.users = [f"user{i:04d}" for i in range(users)]
        self.keys = [f"key{i:02d}" for i in range(api_keys)]
        self.project_of = {key: f"project{i % projects:02d}" for i, key in enumerate(self.keys)}
        self.models = list(models)

    def picks(self, rng: random.Random, first: int, count: int) -> list[Attribution]:
        keys = rng.choices(self.keys, k=count)
        users = rng.choices(self.users, k=count)
        models = rng.choices(self.models, k=count)
        return [
            (None, self.project_of[key], key, user, model)
            for key, user, model in zip(keys, users, models, strict=True)
        ]


def _owner(k: int, key: str, users: int, projects: int, orgs: int) -> tuple[str, str, str, str]:
    """Key k: (org, project, key, user); project p belongs to org p % orgs."""
    project = k % projects
    return f"org{project % orgs}", f"project{project:02d}", key, f"user{k % users:04d}"


def _zipf_cumulative(size: int, exponent: float) -> list[float]:
    """Cumulative weights of ranks 1..size, weight of rank r = r ** -exponent."""
    return list(itertools.accumulate(rank**-exponent for rank in range(1, size + 1)))


class _Realistic:
    """Keys Zipf-popular, each with one user, project and org; models Zipf-popular."""

    def __init__(
        self,
        rng: random.Random,
        events: int,
        users: int,
        api_keys: int,
        projects: int,
        orgs: int,
        models: Sequence[str],
        exponent: float,
    ) -> None:
        keys = [f"key{k:05d}" for k in range(api_keys)]
        # key -> (org, project, key, user)
        self.owner = {key: _owner(k, key, users, projects, orgs) for k, key in enumerate(keys)}
        # The most popular key is a random one, not key00000.
        self.ranked = keys[:]
        rng.shuffle(self.ranked)
        self.key_weights = _zipf_cumulative(api_keys, exponent)
        self.models = list(models)
        self.model_weights = _zipf_cumulative(len(self.models), exponent)
        # Every key once, at random event positions; the rest by popularity.
        self.forced: dict[int, str] = (
            dict(zip(rng.sample(range(events), api_keys), keys, strict=True))
            if events >= api_keys
            else {}
        )

    def picks(self, rng: random.Random, first: int, count: int) -> list[Attribution]:
        keys = rng.choices(self.ranked, cum_weights=self.key_weights, k=count)
        models = rng.choices(self.models, cum_weights=self.model_weights, k=count)
        for offset in range(count):
            forced = self.forced.get(first + offset)
            if forced is not None:
                keys[offset] = forced
        return [(*self.owner[key], model) for key, model in zip(keys, models, strict=True)]


async def seed_llm_month(
    dsn: str,
    events: int = 10_000_000,
    *,
    tenant_id: str = "bench",
    start: datetime = MONTH_START,
    days: int = 30,
    users: int = 1000,
    api_keys: int = 50,
    projects: int = 20,
    models: Sequence[str] = MODELS,
    chunk: int = 200_000,
    seed: int = 7,
    progress: Progress = print,
) -> LlmMonth:
    """The adversarial shape: one tenant (UTC), the LLM meters, `events` events spread evenly
    over `days` days from `start`: each a random meter, model, user and API key (a key belongs
    to a project), a random token count. Idempotency keys are `llm-<n>`. Then the rollups
    (`build_rollups`). Returns what was seeded."""
    rng = random.Random(seed)
    shape = _Adversarial(users, api_keys, projects, models)
    return await _seed(
        dsn, "adversarial", shape, rng, events, tenant_id, start, days, chunk, progress
    )


async def seed_realistic_month(
    dsn: str,
    events: int = 10_000_000,
    *,
    tenant_id: str = "bench",
    start: datetime = MONTH_START,
    days: int = 30,
    users: int = 2000,
    api_keys: int = 10_000,
    projects: int = 50,
    orgs: int = 5,
    models: Sequence[str] = REALISTIC_MODELS,
    exponent: float = 1.1,
    chunk: int = 200_000,
    seed: int = 7,
    progress: Progress = print,
) -> LlmMonth:
    """The realistic shape (see the module docstring): `events` events over `days` days from
    `start`, keys and models Zipf-popular with `exponent`, every key used at least once (if
    events >= api_keys). Idempotency keys are `llm-<n>`. Then the rollups (`build_rollups`).
    Returns what was seeded."""
    rng = random.Random(seed)
    shape = _Realistic(rng, events, users, api_keys, projects, orgs, models, exponent)
    return await _seed(
        dsn, "realistic", shape, rng, events, tenant_id, start, days, chunk, progress
    )


async def _seed(
    dsn: str,
    name: str,
    shape: _Shape,
    rng: random.Random,
    events: int,
    tenant_id: str,
    start: datetime,
    days: int,
    chunk: int,
    progress: Progress,
) -> LlmMonth:
    end = start + timedelta(days=days)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO tenants (id, name, currency, timezone) VALUES ($1, $1, 'USD', 'UTC') "
            "ON CONFLICT (id) DO NOTHING",
            tenant_id,
        )
        meter_ids: dict[str, int] = {}
        for event_name, display, aggregation, _ in LLM_METERS:
            meter_ids[event_name] = await connection.fetchval(
                "INSERT INTO meters (event_name, name, unit, aggregation, currency, has_events) "
                "VALUES ($1, $2, 'tokens', $3, 'USD', true) "
                "ON CONFLICT (event_name) DO UPDATE SET has_events = true RETURNING id",
                event_name,
                display,
                aggregation,
            )
        meters = [(meter_ids[m[0]], m[3]) for m in LLM_METERS]
        step_us = (end - start) / timedelta(microseconds=1) / max(events, 1)
        per_user: Counter[str] = Counter()

        started = time.perf_counter()
        reported = 0
        for first in range(0, events, chunk):
            count = min(chunk, events - first)
            records = _chunk(rng, shape, tenant_id, first, count, start, step_us, meters)
            per_user.update(record[9] for record in records)
            await connection.copy_records_to_table(
                "events", records=records, columns=list(EVENT_COLUMNS)
            )
            done = first + count
            if done - reported >= 1_000_000 or done == events:
                reported = done
                elapsed = time.perf_counter() - started
                progress(f"  {done:>12,} events copied ({elapsed:.0f} s, {done / elapsed:,.0f}/s)")
        timings = {"copy": time.perf_counter() - started}
        busiest = (
            min(per_user.items(), key=lambda item: (-item[1], item[0]))[0] if per_user else None
        )

        folded = await build_rollups(connection, tenant_id, start, end, timings, progress)
        return LlmMonth(tenant_id, start, end, events, meter_ids, name, busiest, timings, folded)
    finally:
        await connection.close()


async def build_rollups(
    connection: asyncpg.Connection,
    tenant_id: str,
    start: datetime,
    end: datetime,
    timings: dict[str, float],
    progress: Progress = print,
) -> int:
    """Rebuild the rollups of [start, end) day by day, fold them into the coarser levels,
    VACUUM ANALYZE events and every rollup table. Records each phase's seconds in `timings`;
    returns the rows folded."""
    rolled = time.perf_counter()
    await connection.execute("SET work_mem = '256MB'")
    day = start
    days = 0
    while day < end:
        following = min(day + timedelta(days=1), end)
        async with connection.transaction():
            await rebuild_rollups(connection, tenant_id, day, following)
        day = following
        days += 1
        if days % 5 == 0 or day >= end:
            elapsed = time.perf_counter() - rolled
            progress(f"  rollups rebuilt for {days} days ({elapsed:.0f} s)")
    timings["rollups"] = time.perf_counter() - rolled

    folding = time.perf_counter()
    folded = await fold_rollups(connection, progress=progress)
    seconds = time.perf_counter() - folding
    timings["fold"] = seconds
    progress(
        f"  fold: {folded:,} rows in {seconds:.1f} s ({folded / max(seconds, 1e-9):,.0f} rows/s)"
    )

    vacuumed = time.perf_counter()
    tables = await rollup_tables(connection)
    await connection.execute("VACUUM ANALYZE " + ", ".join(["events", *tables]))
    timings["vacuum"] = time.perf_counter() - vacuumed
    progress(f"  vacuum analyze events, {', '.join(tables)} ({timings['vacuum']:.0f} s)")
    return folded


def _chunk(
    rng: random.Random,
    shape: _Shape,
    tenant_id: str,
    first: int,
    count: int,
    start: datetime,
    step_us: float,
    meters: list[tuple[int, int]],
) -> list[tuple[Any, ...]]:
    """Events first..first+count-1 in time order (event n falls in [n, n+1) steps)."""
    randoms = [rng.random() for _ in range(count)]
    meter_picks = rng.choices(meters, k=count)
    attributions = shape.picks(rng, first, count)
    records = []
    for offset in range(count):
        n = first + offset
        meter_id, top = meter_picks[offset]
        org, project, key, user, model = attributions[offset]
        records.append(
            (
                tenant_id,
                meter_id,
                f"llm-{n:010d}",
                PAYLOAD_HASH,
                Decimal(1 + int(randoms[offset] * 7919) % top),
                start + timedelta(microseconds=int((n + randoms[offset]) * step_us)),
                org,
                project,
                key,
                user,
                model,
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
    parser.add_argument("--shape", choices=("realistic", "adversarial"), default="realistic")
    args = parser.parse_args()
    seeder = seed_realistic_month if args.shape == "realistic" else seed_llm_month
    asyncio.run(seeder(asyncpg_dsn(args.database_url), args.events))


if __name__ == "__main__":
    main()


async def describe_month(dsn: str, shape: str, tenant_id: str = "bench") -> LlmMonth:
    """What a database seeded before (and kept) holds, for benchmarks reusing it: its events
    over the month from MONTH_START, its meters and its busiest user."""
    connection = await asyncpg.connect(dsn)
    try:
        events = await connection.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1", tenant_id
        )
        meter_ids = {
            r["event_name"]: r["id"]
            for r in await connection.fetch("SELECT id, event_name FROM meters")
        }
        busiest = await connection.fetchval(
            "SELECT user_id FROM events WHERE tenant_id = $1 "
            "GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1",
            tenant_id,
        )
    finally:
        await connection.close()
    end = MONTH_START.replace(month=MONTH_START.month + 1)
    return LlmMonth(tenant_id, MONTH_START, end, events, meter_ids, shape, busiest)
