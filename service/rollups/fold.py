"""The fold: adding the pending part of the 15-minute rollups into the cube's hour, three-hour,
six-hour, day and month projections.

Ingestion only writes the 15-minute rollups (its cost does not grow with the number of coarse
levels). The fold runs later, in the background (every METERING_ROLLUP_FOLD_INTERVAL_SECONDS,
in whichever worker gets the advisory lock) or on demand (`python -m service rollups fold`),
over chunks (consecutive days of one tenant and UTC month), each in one transaction:

1. lock the chunk's pending rows (count <> folded_count) in key order, as ingestion does, so
   the two never deadlock; a row that ingestion is updating is waited for and read afresh;
2. add their deltas per meter (each sum - its folded sum, count - folded_count; `last` merges
   by (ts, id), so it may be added again safely) to every cube projection of every grain;
3. set folded_sums = sums and folded_count = count on them.

Steps 2 and 3 commit together, so an event is counted in the cube exactly once: before the
commit it is pending, after it folded, and a reader (one statement, one snapshot) sees one or
the other, adding the pending part itself. An event stored after the lock makes its row
pending again; the next fold takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from service.common.progress import NO_PROGRESS, Progress
from service.common.time import floor_to_quarter_hour
from service.rollups.levels import (
    DIMENSIONS,
    HOUR_BLOCKS,
    PROJECTION_FIELDS,
    PROJECTIONS,
    Grain,
    grain_end,
    grain_start,
)
from service.rollups.upkeep import FOLD_LOCK_KEY, WIDE_KEY, merge_on_conflict
from service.settings import Settings

log = structlog.get_logger(__name__)

# The background loop folds buckets that ended at least this long ago. Late events mostly land
# in the last hour; folding rows that are still being written would make ingestion wait on the
# fold's row locks (and fold them again a minute later). Reads add the unfolded hour
# themselves: a few thousand rows of a busy tenant.
FOLD_DELAY = timedelta(hours=1)
FIRST_RUN_DELAY_SECONDS = 10.0
# Consecutive pending days of one tenant and UTC month are folded together up to this many
# rows: a month's cells are then written once per chunk rather than once per day.
CHUNK_ROWS = 500_000

CUBE_KEY = (
    "tenant_id, meter_id, grain, projection, bucket_start, "
    "org_id, project_id, api_key_id, user_id, model, dimensions"
)
CUBE_COLUMNS = f"{CUBE_KEY}, sum, count, last_value, last_ts, last_event_id, max_value"
_GRAIN_COLUMN = {
    Grain.HOUR: "hour_start",
    Grain.HOURS_3: "hours_3_start",
    Grain.HOURS_6: "hours_6_start",
    Grain.DAY: "day_start",
    Grain.MONTH: "month_start",
}
# Each grain's bucket start of a 15-minute bucket `p.bucket_start`, in UTC.
_GRAIN_START: dict[Grain, str] = {
    Grain.HOUR: "date_trunc('hour', p.bucket_start, 'UTC')",
    **{
        grain: f"date_bin('{hours} hours', p.bucket_start, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
        for grain, hours in HOUR_BLOCKS.items()
        if grain is not Grain.HOUR
    },
    Grain.DAY: "date_trunc('day', p.bucket_start, 'UTC')",
    Grain.MONTH: "date_trunc('month', p.bucket_start, 'UTC')",
}
_FIELD_COLUMNS = {
    **{bit: name for name, bit in PROJECTION_FIELDS.items()},
    DIMENSIONS: "dimensions",
}


def _grouping_sets() -> str:
    sets = []
    for grain, projections in PROJECTIONS.items():
        for projection in projections:
            columns = [name for bit, name in _FIELD_COLUMNS.items() if projection & bit]
            sets.append(f"(tenant_id, meter_id, {_GRAIN_COLUMN[grain]}, {', '.join(columns)})")
    return ",\n        ".join(sets)


_GRAIN_STARTS = ",\n           ".join(f"{_GRAIN_START[g]} AS {c}" for g, c in _GRAIN_COLUMN.items())


def _grain_expression() -> str:
    """The grain of a grouping set: the one whose bucket start column it grouped by."""
    cases = "\n                ".join(
        f"WHEN GROUPING({column}) = 0 THEN '{grain.value}'"
        for grain, column in _GRAIN_COLUMN.items()
    )
    return f"CASE {cases}\n           END"


def _projection_expression() -> str:
    """The projection bits of a grouping set: a field is kept where GROUPING() says it was
    grouped by."""
    return " + ".join(
        f"(1 - GROUPING({name})) * {bit}" for bit, name in sorted(_FIELD_COLUMNS.items())
    )


def fold_sql(rows: str) -> str:
    """The statement that folds the 15-minute rows meeting `rows` (a condition on
    rollup_rows): steps 1 to 3 above. The fold passes its chunk's pending rows; a cancel
    passes the rows it changed (service.rollups.withdraw), under the same advisory lock."""
    return f"""
WITH pending AS (
    SELECT {WIDE_KEY}, sums, count, folded_sums, folded_count,
           last_values, last_ts, last_event_id, maxes
    FROM rollup_rows
    WHERE {rows}
    ORDER BY {WIDE_KEY}
    FOR UPDATE
),
marked AS (
    UPDATE rollup_rows AS r SET folded_sums = p.sums, folded_count = p.count
    FROM pending AS p
    WHERE (r.tenant_id, r.bucket_start, r.org_id, r.project_id, r.api_key_id, r.user_id,
           r.model, r.dimensions, r.meter_ids)
        = (p.tenant_id, p.bucket_start, p.org_id, p.project_id, p.api_key_id, p.user_id,
           p.model, p.dimensions, p.meter_ids)
    RETURNING 1
),
deltas AS (
    SELECT p.tenant_id, q.meter_id, p.org_id, p.project_id, p.api_key_id, p.user_id, p.model,
           p.dimensions,
           {_GRAIN_STARTS},
           q.sum - coalesce(q.folded_sum, 0) AS sum, p.count - p.folded_count AS count,
           ARRAY[extract(epoch FROM p.last_ts), p.last_event_id::numeric, q.last_value]
               AS latest,
           p.last_ts, q.max_value
    FROM pending AS p
    -- One row per meter of a wide row: its sum, last value and max, the row's count and
    -- latest. A max merges with greatest, so a row's whole max may be added again safely.
    CROSS JOIN LATERAL unnest(p.meter_ids, p.sums, p.folded_sums, p.last_values, p.maxes)
        AS q(meter_id, sum, folded_sum, last_value, max_value)
),
cells AS (
    SELECT tenant_id, meter_id,
           {_grain_expression()} AS grain,
           ({_projection_expression()})::smallint AS projection,
           coalesce({", ".join(_GRAIN_COLUMN.values())}) AS bucket_start,
           coalesce(org_id, '') AS org_id, coalesce(project_id, '') AS project_id,
           coalesce(api_key_id, '') AS api_key_id, coalesce(user_id, '') AS user_id,
           coalesce(model, '') AS model, coalesce(dimensions, '{{}}'::jsonb) AS dimensions,
           sum(sum) AS sum, sum(count) AS count, max(latest) AS latest, max(last_ts) AS last_ts,
           max(max_value) AS max_value
    FROM deltas
    GROUP BY GROUPING SETS (
        {_grouping_sets()}
    )
),
upserted AS (
    INSERT INTO rollup_cube ({CUBE_COLUMNS})
    SELECT {CUBE_KEY}, sum, count, latest[3], last_ts, latest[2]::bigint, max_value
    FROM cells
    -- In key order, so new cells land on disk as the primary key orders them: a month by API
    -- key and model then reads one page per ~50 cells instead of one per cell (hashed
    -- grouping sets come out in no order). Locking needs no order: only the fold writes the
    -- cube, one chunk at a time (advisory lock).
    ORDER BY {CUBE_KEY}
    ON CONFLICT ({CUBE_KEY}) {merge_on_conflict("rollup_cube")}
    RETURNING 1
)
SELECT (SELECT count(*) FROM marked) AS folded, (SELECT count(*) FROM upserted) AS cells
"""


FOLD_SQL = fold_sql("tenant_id = $1 AND bucket_start >= $2 AND bucket_start < $3 AND pending")

PENDING_DAYS_SQL = """
SELECT tenant_id, date_trunc('day', bucket_start, 'UTC') AS day, count(*) AS rows
FROM rollup_rows
WHERE pending AND bucket_start < $1 AND ($2::text IS NULL OR tenant_id = $2)
GROUP BY 1, 2
ORDER BY 1, 2
"""


@dataclass(frozen=True, slots=True)
class _Chunk:
    tenant_id: str
    start: datetime
    end: datetime
    rows: int


def _chunks(pending: list[asyncpg.Record], limit: datetime) -> list[_Chunk]:
    """(tenant, day) counts merged into runs of one tenant and UTC month of up to CHUNK_ROWS
    rows (a single day may exceed it)."""
    chunks: list[_Chunk] = []
    for record in pending:
        tenant_id, day, rows = record["tenant_id"], record["day"], record["rows"]
        end = min(grain_end(Grain.DAY, day), limit)
        last = chunks[-1] if chunks else None
        if (
            last is not None
            and last.tenant_id == tenant_id
            and grain_start(Grain.MONTH, last.start) == grain_start(Grain.MONTH, day)
            and last.rows + rows <= CHUNK_ROWS
        ):
            chunks[-1] = _Chunk(tenant_id, last.start, end, last.rows + rows)
        else:
            chunks.append(_Chunk(tenant_id, day, end, rows))
    return chunks


async def fold_rollups(
    connection: asyncpg.Connection,
    *,
    before: datetime | None = None,
    tenant_id: str | None = None,
    max_seconds: float | None = None,
    progress: Callable[[str], None] | None = None,
    bar: Progress = NO_PROGRESS,
) -> int:
    """Fold every pending 15-minute rollup row of buckets starting before `before` (default:
    all), of one tenant or all, a chunk (days of one tenant and month) per transaction; with
    `max_seconds`, no new chunk starts after that long (the rest waits for the next run).
    Returns the rows folded. The connection must not be inside a transaction. `progress`
    gets a line per chunk (for logs), `bar` the rows folded (for a person watching)."""
    limit = before or datetime(9999, 1, 1, tzinfo=UTC)
    chunks = _chunks(await connection.fetch(PENDING_DAYS_SQL, limit, tenant_id), limit)
    total_rows = sum(chunk.rows for chunk in chunks)
    bar.start("folding into the hour to month levels (rows)", total_rows)
    folded = 0
    started = time.perf_counter()
    for index, chunk in enumerate(chunks, start=1):
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", FOLD_LOCK_KEY)
            # A chunk is up to a few hundred thousand rows: hash them in memory.
            await connection.execute("SET LOCAL work_mem = '256MB'")
            await connection.execute("SET LOCAL jit = off")
            # Hash every grouping set in one pass; the planner, unable to estimate how many
            # rows are pending, would otherwise sort for some of them.
            await connection.execute("SET LOCAL enable_sort = off")
            row = await connection.fetchrow(FOLD_SQL, chunk.tenant_id, chunk.start, chunk.end)
        folded += row["folded"]
        bar.advance(row["folded"])
        if progress is not None:
            elapsed = time.perf_counter() - started
            progress(
                f"  folded {chunk.tenant_id} {chunk.start:%Y-%m-%d %H:%M} to "
                f"{chunk.end:%Y-%m-%d %H:%M}: {row['folded']:,} rows into {row['cells']:,} "
                f"cube cells ({index}/{len(chunks)} chunks, {folded:,}/{total_rows:,} rows, "
                f"{elapsed:.0f} s)"
            )
    return folded


def fold_cutoff(now: datetime) -> datetime:
    """What the background loop folds: buckets that ended FOLD_DELAY ago or earlier."""
    return floor_to_quarter_hour(now) - FOLD_DELAY


async def fold_loop(
    settings: Settings, database_url: str, *, first_delay: float = FIRST_RUN_DELAY_SECONDS
) -> None:
    """Fold every `rollup_fold_interval_seconds` until cancelled. Every worker runs this loop;
    the advisory lock makes them take turns (a chunk already folded by one is no longer
    pending for the next). A failed run is logged and retried at the next interval."""
    from service.db.connections import dedicated_connection

    delay = min(first_delay, settings.rollup_fold_interval_seconds)
    while True:
        await asyncio.sleep(delay)
        delay = settings.rollup_fold_interval_seconds
        try:
            async with dedicated_connection(database_url, "metering-fold") as connection:
                started = time.perf_counter()
                rows = await fold_rollups(
                    connection,
                    before=fold_cutoff(datetime.now(UTC)),
                    # At most about a quarter of the interval's time folding: under a backlog
                    # (a bulk load) the fold catches up over several runs, not at once.
                    max_seconds=settings.rollup_fold_interval_seconds / 4,
                )
            if rows:
                log.info(
                    "rollups.folded", rows=rows, seconds=round(time.perf_counter() - started, 3)
                )
        except Exception:
            log.exception("rollups.fold_failed")


def start_fold_loop(settings: Settings, database_url: str) -> asyncio.Task[None] | None:
    """The in-service fold, or None when METERING_ROLLUP_FOLD_INTERVAL_SECONDS is 0."""
    if settings.rollup_fold_interval_seconds <= 0:
        return None
    return asyncio.create_task(fold_loop(settings, database_url), name="rollup-fold-loop")


async def stop_fold_loop(task: asyncio.Task[None] | None) -> None:
    """Cancel the loop and wait: an in-flight chunk is rolled back, never half-folded."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
