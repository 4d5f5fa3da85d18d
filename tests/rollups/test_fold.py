"""The fold: after it, the cube holds exactly the 15-minute rollups projected onto every level
(a naive computation in Python), whatever interleaving of ingestion and folds came before,
concurrent ones included; a rebuild gives the cube incremental folding gave; the background
loop and the CLI fold."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.rollups.fold import fold_cutoff, fold_loop, fold_rollups
from service.rollups.levels import DIMENSIONS, PROJECTION_FIELDS, PROJECTIONS, Grain, grain_start
from service.rollups.upkeep import rebuild_rollups
from tests.conftest import make_settings
from tests.test_cli import run_cli
from tests.usage.conftest import METERS, Client, Ev, store, usage

T = TypeVar("T")
START = datetime(2026, 10, 30, 20, tzinfo=UTC)  # a month end inside the range
FIELDS = {**{bit: name for name, bit in PROJECTION_FIELDS.items()}, DIMENSIONS: "dimensions"}
CUBE = """
SELECT tenant_id, meter_id, grain, projection, bucket_start, org_id, project_id, api_key_id,
       user_id, model, dimensions::text, sum, count, last_value, last_ts, last_event_id
FROM rollup_cube
"""
ROLLUPS = """
SELECT tenant_id, meter_id, bucket_start, org_id, project_id, api_key_id, user_id, model,
       dimensions::text AS dimensions, sum, count, last_value, last_ts, last_event_id,
       folded_sum, folded_count
FROM rollups
"""

Cell = tuple[Any, ...]


def naive_cube(rows: list[asyncpg.Record]) -> set[Cell]:
    """Every 15-minute row projected onto every (grain, projection), summed; `last` the value
    of the row with the greatest (ts, event id)."""
    cells: dict[Cell, list[Any]] = {}
    for row in rows:
        for grain, projections in PROJECTIONS.items():
            for projection in projections:
                kept = {
                    name: row[name] if projection & bit else ("{}" if bit == DIMENSIONS else "")
                    for bit, name in FIELDS.items()
                }
                key = (
                    row["tenant_id"],
                    row["meter_id"],
                    grain.value,
                    projection,
                    grain_start(grain, row["bucket_start"]),
                    kept["org_id"],
                    kept["project_id"],
                    kept["api_key_id"],
                    kept["user_id"],
                    kept["model"],
                    json.dumps(json.loads(kept["dimensions"]), sort_keys=True),
                )
                cell = cells.setdefault(key, [Decimal(0), 0, None, None, None])
                cell[0] += row["sum"]
                cell[1] += row["count"]
                latest = (row["last_ts"], row["last_event_id"])
                if cell[3] is None or latest > (cell[3], cell[4]):
                    cell[2:] = [row["last_value"], *latest]
    return {(*key, *values) for key, values in cells.items()}


async def cube(pg_pool: asyncpg.Pool) -> set[Cell]:
    return {
        (*r[:10], json.dumps(json.loads(r[10]), sort_keys=True), *r[11:])
        for r in await pg_pool.fetch(CUBE)
    }


async def assert_cube_is_exact(pg_pool: asyncpg.Pool) -> None:
    rows = await pg_pool.fetch(ROLLUPS)
    assert all(r["count"] == r["folded_count"] and r["sum"] == r["folded_sum"] for r in rows)
    assert await cube(pg_pool) == naive_cube(rows)


def make_events(specs: list[dict[str, Any]], prefix: str) -> list[Ev]:
    events = []
    for index, spec in enumerate(specs):
        meter = spec["meter"]
        dims = {"region": spec["region"]} if spec["region"] and meter != "api_calls" else {}
        events.append(
            Ev(
                tenant_id=spec["tenant"],
                meter=meter,
                ts=START + timedelta(seconds=spec["offset"]),
                value=None if meter == "api_calls" else Decimal(spec["value"]),
                key=f"{prefix}{index}",
                attribution={"user_id": spec["user"], "api_key_id": spec["key"], "model": "m1"},
                dimensions=dims,
            )
        )
    return events


event_specs = st.lists(
    st.fixed_dictionaries(
        {
            "tenant": st.sampled_from(["acme", "globex"]),
            "meter": st.sampled_from([name for name, _, _ in METERS]),
            "offset": st.integers(min_value=0, max_value=3 * 86400),
            "value": st.integers(min_value=0, max_value=1000),
            "user": st.sampled_from([None, "u1", "u2"]),
            "key": st.sampled_from([None, "k1", "k2"]),
            "region": st.sampled_from([None, "eu", "us"]),
        }
    ),
    min_size=1,
    max_size=30,
)


def batches_and_folds(max_examples: int, max_batches: int) -> Callable[[T], T]:
    """Hypothesis: batches of events (`batches`) and, after batch i, a fold of the buckets
    before START + cutoffs[i] quarter hours (None: all of them)."""

    def decorate(test: T) -> T:
        return settings(
            max_examples=max_examples,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )(
            given(
                batches=st.lists(event_specs, min_size=1, max_size=max_batches),
                cutoffs=st.lists(st.one_of(st.none(), st.integers(min_value=0, max_value=3 * 96))),
            )(test)
        )

    return decorate


async def store_and_fold(
    pg_pool: asyncpg.Pool,
    world: dict[str, int],
    batches: list[list[dict[str, Any]]],
    cutoffs: list[int | None],
) -> list[Ev]:
    """From empty rollups: store each batch, then fold as `cutoffs` says (batches_and_folds);
    the stored events."""
    await pg_pool.execute("TRUNCATE events, rollup_rows, model_rollup_rows, rollup_cube")
    stored: list[Ev] = []
    for number, batch in enumerate(batches):
        stored += await store(pg_pool, world, make_events(batch, f"b{number}-"))
        if number < len(cutoffs):
            cutoff = cutoffs[number]
            before = None if cutoff is None else START + timedelta(minutes=15 * cutoff)
            async with pg_pool.acquire() as connection:
                await fold_rollups(connection, before=before)
    return stored


@batches_and_folds(max_examples=15, max_batches=4)
async def test_the_cube_is_the_rollups_projected_whatever_the_order_of_folds(
    world: dict[str, int],
    pg_pool: asyncpg.Pool,
    batches: list[list[dict[str, Any]]],
    cutoffs: list[int | None],
) -> None:
    await store_and_fold(pg_pool, world, batches, cutoffs)
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection)
    await assert_cube_is_exact(pg_pool)


async def test_a_rebuild_gives_the_cube_incremental_folding_gave(
    world: dict[str, int], pg_pool: asyncpg.Pool
) -> None:
    specs = [
        {"tenant": "acme", "meter": m, "offset": o, "value": o % 97, "user": u, "key": "k1",
         "region": "eu"}
        for o in range(0, 3 * 86400, 3917)
        for m, u in (("input_tokens", "u1"), ("seats", "u2"), ("api_calls", None))
    ]  # fmt: skip
    await store(pg_pool, world, make_events(specs[: len(specs) // 2], "a"))
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection, before=START + timedelta(days=1))
    await store(pg_pool, world, make_events(specs[len(specs) // 2 :], "b"))
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection)
    incremental = await cube(pg_pool)
    assert incremental
    async with pg_pool.acquire() as connection:
        async with connection.transaction():
            await rebuild_rollups(
                connection, "acme", START + timedelta(hours=4), START + timedelta(days=1)
            )
        # Pending again: the months the range touches, until folded.
        assert await connection.fetchval("SELECT count(*) FROM rollups WHERE pending")
        await fold_rollups(connection)
    assert await cube(pg_pool) == incremental
    await assert_cube_is_exact(pg_pool)


async def test_folds_during_concurrent_ingestion_count_every_event_once(
    world: dict[str, int], pg_pool: asyncpg.Pool, client: Client, reader: dict[str, str]
) -> None:
    """Writers keep adding to the same few rollup rows (one bucket, two users) while folds run
    back to back; afterwards the cube and usage equal the events."""
    rounds, writers = 30, 4
    done = asyncio.Event()

    async def writer(number: int) -> None:
        for round_ in range(rounds):
            event = Ev(
                tenant_id="acme",
                meter="input_tokens",
                ts=START + timedelta(minutes=number % 2, seconds=round_),
                value=Decimal(number + 1),
                key=f"w{number}-{round_}",
                attribution={"user_id": f"u{number % 2}"},
            )
            await store(pg_pool, world, [event])

    async def folder() -> int:
        folds = 0
        async with pg_pool.acquire() as connection:
            while not done.is_set():
                await fold_rollups(connection)
                folds += 1
        return folds

    folding = asyncio.create_task(folder())
    await asyncio.gather(*(writer(n) for n in range(writers)))
    done.set()
    assert await folding > 1
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection)
    await assert_cube_is_exact(pg_pool)
    answer = await usage(
        client,
        reader,
        tenant_id="acme",
        meter="input_tokens",
        from_="2026-10-01T00:00:00Z",
        to="2026-11-01T00:00:00Z",
        group_by="user_id",
    )
    totals = {row["group"]["user_id"]: row["sum"] for row in answer["rows"]}
    assert totals == {"u0": str(rounds * (1 + 3)), "u1": str(rounds * (2 + 4))}


async def test_the_background_loop_folds_finished_buckets(
    world: dict[str, int], pg_pool: asyncpg.Pool, database_url: str
) -> None:
    now = datetime.now(UTC)
    old = Ev("acme", "input_tokens", now - timedelta(hours=2), Decimal(5), "old")
    fresh = Ev("acme", "input_tokens", now, Decimal(7), "fresh")
    await store(pg_pool, world, [old, fresh])
    assert fold_cutoff(now) <= now - timedelta(hours=1)
    loop = asyncio.create_task(
        fold_loop(
            replace(make_settings(database_url), rollup_fold_interval_seconds=0.05),
            database_url,
            first_delay=0,
        )
    )
    try:
        for _ in range(200):
            if await pg_pool.fetchval("SELECT count(*) FROM rollup_cube"):
                break
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    pending = await pg_pool.fetch("SELECT sum FROM rollups WHERE pending")
    assert [row["sum"] for row in pending] == [Decimal(7)]  # the fresh bucket waits
    month_total = await pg_pool.fetchval(
        "SELECT sum(sum) FROM rollup_cube WHERE grain = 'm' AND projection = $1",
        PROJECTIONS[Grain.MONTH][0],
    )
    assert month_total == Decimal(5)


@pytest.mark.usefixtures("world")
async def test_the_cli_folds_everything_pending(
    world: dict[str, int], pg_pool: asyncpg.Pool, database_url: str
) -> None:
    await store(pg_pool, world, [Ev("acme", "input_tokens", START, Decimal(3), "cli")])
    result = await asyncio.to_thread(run_cli, "rollups", "fold", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "Folded 1 rollup rows." in result.stdout
    assert "folded acme 2026-10-30" in result.stderr  # progress per chunk
    await assert_cube_is_exact(pg_pool)


async def test_pending_rows_are_read_from_the_partial_index(pg_pool: asyncpg.Pool) -> None:
    plan = await pg_pool.fetchval(
        "EXPLAIN (FORMAT JSON) SELECT * FROM rollups WHERE tenant_id = 'a' "
        "AND pending AND bucket_start >= now() AND bucket_start < now()"
    )
    assert "ix_rollup_rows_pending" in plan


async def test_a_folded_month_read_cell_by_cell_equals_the_events(
    world: dict[str, int], pg_pool: asyncpg.Pool, client: Client, reader: dict[str, str]
) -> None:
    """A UTC month grouped by fields one projection keeps exactly is read straight from the
    cube cells (ordered by the grouped fields, in any order of them); a late event makes the
    month pending again and the answer stays the same plus that event."""
    users, models = ["u2", "u10", "ü", None], ["m-b", "m-a"]
    events = [
        Ev(
            "globex",
            "input_tokens",
            datetime(2026, 9, 1, tzinfo=UTC) + timedelta(hours=7 * n),
            Decimal(n % 13),
            f"m{n}",
            attribution={"user_id": users[n % 4], "model": models[n % 2]},
        )
        for n in range(100)
    ]
    await store(pg_pool, world, events)
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection)

    async def month(group_by: list[str]) -> list[tuple[Any, ...]]:
        answer = await usage(
            client,
            reader,
            tenant_id="globex",
            meter="input_tokens",
            from_="2026-09-01T00:00:00Z",
            to="2026-10-01T00:00:00Z",
            timezone="UTC",
            group_by=group_by,
        )
        return [
            (*(row["group"][key] for key in group_by), row["sum"], row["count"], row["avg"])
            for row in answer["rows"]
        ]

    def naive(group_by: list[str], stored: list[Ev]) -> list[tuple[Any, ...]]:
        totals: dict[tuple[Any, ...], list[Decimal]] = {}
        for event in stored:
            key = tuple(event.attribution.get(k) for k in group_by)
            total = totals.setdefault(key, [Decimal(0), Decimal(0)])
            total[0] += event.value or 0
            total[1] += 1
        rows = []
        for key in sorted(totals, key=lambda k: tuple(v or "" for v in k)):
            total, count = totals[key]
            avg = (total / count).quantize(Decimal("1e-12")).normalize()
            rows.append((*key, str(total), int(count), format(avg, "f")))
        return rows

    for group_by in (["user_id"], ["model", "user_id"], ["user_id", "model"]):
        assert await month(group_by) == naive(group_by, events)
    late = Ev(
        "globex",
        "input_tokens",
        datetime(2026, 9, 30, 23, 59, tzinfo=UTC),
        Decimal(5),
        "late",
        attribution={"user_id": "u2", "model": "m-a"},
    )
    await store(pg_pool, world, [late])
    assert await month(["user_id", "model"]) == naive(["user_id", "model"], [*events, late])
