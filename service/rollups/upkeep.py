"""Writing rollups: the bucket, the aggregates, the upkeep ingestion runs in its own statement
and the rebuild from raw events. Both writers fold events with the same expressions, so a
rebuild gives exactly the rollups incremental ingestion gave."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from service.common.progress import NO_PROGRESS, Progress
from service.common.time import QUARTER_HOUR
from service.rollups.levels import Grain, grain_end
from service.rollups.models import BUCKET_MINUTES

# Advisory lock key held (per transaction) by every fold chunk and by rebuilds: one writer of
# the cube at a time. ASCII "rlupfold".
FOLD_LOCK_KEY = int.from_bytes(b"rlupfold", "big") & 0x7FFF_FFFF_FFFF_FFFF


def bucket_of(ts: str) -> str:
    """SQL for the start of the bucket holding the instant `ts`; the origin is any instant on a
    bucket edge."""
    return f"date_bin('{BUCKET_MINUTES} minutes', {ts}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"


def latest(column: str, ts: str, event_id: str) -> str:
    """SQL for the `column` of the row with the greatest (ts, event id): `last` is the value of
    the latest event by event time, ties going to the later-stored event."""
    return f"(array_agg({column} ORDER BY {ts} DESC, {event_id} DESC))[1]"


ROLLUP_KEY = (
    "tenant_id, meter_id, bucket_start, org_id, project_id, api_key_id, user_id, model, dimensions"
)
# The coarse rollups: the same buckets keyed by model and dimensions only.
MODEL_ROLLUP_KEY = "tenant_id, meter_id, bucket_start, model, dimensions"
AGGREGATE_COLUMNS = "sum, count, last_value, last_ts, last_event_id"
# What every writer stores per rollup row, from raw events (value, ts, id): the values' sum
# (an event without value adds 0), their number, and the latest event's value, time and id.
EVENT_AGGREGATES = f"""sum(coalesce(value, 0)) AS sum, count(*) AS count,
           {latest("value", "ts", "id")} AS last_value,
           max(ts) AS last_ts,
           {latest("id", "ts", "id")} AS last_event_id"""
# The same, folding rollup rows into coarser ones.
ROLLUP_AGGREGATES = f"""sum(sum) AS sum, sum(count) AS count,
           {latest("last_value", "last_ts", "last_event_id")} AS last_value,
           max(last_ts) AS last_ts,
           {latest("last_event_id", "last_ts", "last_event_id")} AS last_event_id"""
# Raw event columns to the rollup key: an absent attribution is stored as ''.
EVENT_TO_ROLLUP_KEY = f"""tenant_id, meter_id, {bucket_of("ts")} AS bucket_start,
           coalesce(org_id, '') AS org_id, coalesce(project_id, '') AS project_id,
           coalesce(api_key_id, '') AS api_key_id, coalesce(user_id, '') AS user_id,
           coalesce(model, '') AS model, dimensions"""
# The columns of newly stored events the ingest upkeep reads (dimensions as jsonb).
UPKEEP_SOURCE_COLUMNS = (
    "tenant_id, id, meter_id, value, ts, org_id, project_id, api_key_id, user_id, model, dimensions"
)


def merge_on_conflict(table: str) -> str:
    """The upsert that adds a new bucket into an existing one; `last` goes to the later
    (ts, id)."""
    return f"""DO UPDATE SET
        sum = {table}.sum + EXCLUDED.sum,
        count = {table}.count + EXCLUDED.count,
        last_value = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_event_id)
                               > ({table}.last_ts, {table}.last_event_id)
                          THEN EXCLUDED.last_value ELSE {table}.last_value END,
        last_event_id = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_event_id)
                                  > ({table}.last_ts, {table}.last_event_id)
                             THEN EXCLUDED.last_event_id ELSE {table}.last_event_id END,
        last_ts = GREATEST({table}.last_ts, EXCLUDED.last_ts)"""


def ingest_upkeep_ctes(source: str) -> str:
    """The common table expressions that fold the events of the CTE `source` (newly inserted
    events with UPKEEP_SOURCE_COLUMNS) into both rollup tables, to be placed after `source` in
    the ingest statement: events and their rollups are written by one statement, so one
    transaction, with no extra round trip.

    Rows are aggregated per rollup key and upserted in key order, so concurrent transactions
    lock rollup rows in the same order and cannot deadlock. The same buckets, folded by model
    and dimensions, are upserted into model_rollups, in key order too; every statement runs the
    same plan, so the two upserts always lock in one order. PostgreSQL runs unreferenced
    data-modifying CTEs last-listed first, so model_upserted is listed before upserted: its few
    rows, which every concurrent batch of a tenant touches, are then written last and locked
    for the shortest time before the commit."""
    return f"""buckets AS (
    SELECT {EVENT_TO_ROLLUP_KEY},
           {EVENT_AGGREGATES}
    FROM {source}
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
),
model_buckets AS (
    SELECT {MODEL_ROLLUP_KEY}, {ROLLUP_AGGREGATES}
    FROM buckets
    GROUP BY 1, 2, 3, 4, 5
),
model_upserted AS (
    INSERT INTO model_rollups ({MODEL_ROLLUP_KEY}, {AGGREGATE_COLUMNS})
    SELECT {MODEL_ROLLUP_KEY}, {AGGREGATE_COLUMNS}
    FROM model_buckets
    ORDER BY {MODEL_ROLLUP_KEY}
    ON CONFLICT ({MODEL_ROLLUP_KEY}) {merge_on_conflict("model_rollups")}
    RETURNING 1
),
upserted AS (
    INSERT INTO rollups ({ROLLUP_KEY}, {AGGREGATE_COLUMNS})
    SELECT {ROLLUP_KEY}, {AGGREGATE_COLUMNS}
    FROM buckets
    ORDER BY {ROLLUP_KEY}
    ON CONFLICT ({ROLLUP_KEY}) {merge_on_conflict("rollups")}
    RETURNING 1
)"""


REBUILD_DELETE_SQL = """
DELETE FROM rollups WHERE tenant_id = $1 AND bucket_start >= $2 AND bucket_start < $3
"""
REBUILD_INSERT_SQL = f"""
INSERT INTO rollups ({ROLLUP_KEY}, {AGGREGATE_COLUMNS})
SELECT {EVENT_TO_ROLLUP_KEY},
       {EVENT_AGGREGATES}
FROM events
WHERE tenant_id = $1 AND ts >= $2 AND ts < $3
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
"""
REBUILD_MODEL_DELETE_SQL = """
DELETE FROM model_rollups WHERE tenant_id = $1 AND bucket_start >= $2 AND bucket_start < $3
"""
# From the rollups just rebuilt, in the same transaction: the same folding as ingestion.
REBUILD_MODEL_INSERT_SQL = f"""
INSERT INTO model_rollups ({MODEL_ROLLUP_KEY}, {AGGREGATE_COLUMNS})
SELECT {MODEL_ROLLUP_KEY}, {ROLLUP_AGGREGATES}
FROM rollups
WHERE tenant_id = $1 AND bucket_start >= $2 AND bucket_start < $3
GROUP BY 1, 2, 3, 4, 5
"""


async def reset_cube(
    connection: asyncpg.Connection, tenant_id: str, start: datetime, end: datetime
) -> None:
    """Before the 15-minute rollups of [start, end) are rebuilt, in the rebuild's transaction:
    drop the tenant's cube cells of every UTC month that range touches and mark all of those
    months' 15-minute rows pending again, so the next fold rebuilds those cells from scratch
    (equal to what incremental folding gives). Waits for a running fold chunk to finish."""
    await connection.execute("SELECT pg_advisory_xact_lock($1)", FOLD_LOCK_KEY)
    first = start.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (end - QUARTER_HOUR).astimezone(UTC)
    after = grain_end(Grain.MONTH, last_month.replace(day=1, hour=0, minute=0, second=0))
    await connection.execute(
        "DELETE FROM rollup_cube WHERE tenant_id = $1 AND bucket_start >= $2 AND bucket_start < $3",
        tenant_id,
        first,
        after,
    )
    await connection.execute(
        "UPDATE rollups SET folded_sum = 0, folded_count = 0 WHERE tenant_id = $1 "
        "AND bucket_start >= $2 AND bucket_start < $3 AND folded_count <> 0",
        tenant_id,
        first,
        after,
    )


REBUILD_STEPS = 5


async def rebuild_rollups(
    connection: asyncpg.Connection,
    tenant_id: str,
    start: datetime,
    end: datetime,
    progress: Progress = NO_PROGRESS,
) -> tuple[int, int]:
    """Replace the tenant's rollups in [start, end) (bucket-aligned) with ones recomputed from
    raw events, and its model rollups with ones folded from those, in the caller's transaction.
    Returns (rollup rows deleted, rollup rows written). `progress` counts its REBUILD_STEPS
    statements (each is one pass over the range: rows cannot be counted as they go)."""
    progress.start("rebuilding rollups from raw events (steps)", REBUILD_STEPS)
    # SHARE mode blocks concurrent ingestion (ROW EXCLUSIVE) until this transaction ends, so no
    # event can be counted both by the rebuild and by an in-flight insert.
    await connection.execute("LOCK TABLE events IN SHARE MODE")
    await reset_cube(connection, tenant_id, start, end)
    progress.advance()
    deleted = await connection.execute(REBUILD_DELETE_SQL, tenant_id, start, end)
    progress.advance()
    written = await connection.execute(REBUILD_INSERT_SQL, tenant_id, start, end)
    progress.advance()
    await connection.execute(REBUILD_MODEL_DELETE_SQL, tenant_id, start, end)
    progress.advance()
    await connection.execute(REBUILD_MODEL_INSERT_SQL, tenant_id, start, end)
    progress.advance()
    return int(deleted.split()[-1]), int(written.split()[-1])
