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
    """SQL for the `column` (a number) of the row with the greatest (ts, event id): `last` is
    the value of the latest event by event time, ties going to the later-stored event. A max()
    over (time, id, column) arrays rather than an ordered array_agg: the groups may then be
    hashed instead of sorting every row by the wide key (a third of the ingest statement)."""
    return f"(max(ARRAY[extract(epoch FROM {ts}), {event_id}::numeric, {column}::numeric]))[3]"


def latest_id(ts: str, event_id: str) -> str:
    """SQL for the greatest event id by (ts, event id): the latest event's."""
    return f"(max(ARRAY[extract(epoch FROM {ts}), {event_id}::numeric]))[2]::bigint"


# The per-meter key and aggregates: what the views `rollups` and `model_rollups` show (one row
# per meter of a wide row) and the cube stores.
ROLLUP_KEY = (
    "tenant_id, meter_id, bucket_start, org_id, project_id, api_key_id, user_id, model, dimensions"
)
AGGREGATE_COLUMNS = "sum, count, last_value, last_ts, last_event_id"
# The wide 15-minute rows: keyed by the sorted set of meters an event reported as well, with
# one sum and last value per meter (by position in meter_ids) and one count and latest event.
WIDE_KEY = (
    "tenant_id, bucket_start, org_id, project_id, api_key_id, user_id, model, dimensions, meter_ids"
)
MODEL_WIDE_KEY = "tenant_id, bucket_start, model, dimensions, meter_ids"
WIDE_COLUMNS = "sums, count, last_values, last_ts, last_event_id"
# The same, folding rollup cells into coarser ones.
ROLLUP_AGGREGATES = f"""sum(sum) AS sum, sum(count) AS count,
           {latest("last_value", "last_ts", "last_event_id")} AS last_value,
           max(last_ts) AS last_ts,
           {latest_id("last_ts", "last_event_id")} AS last_event_id"""
# Event parts (PART_COLUMNS) into wide rows, one per rollup key and set of meters: sums added
# element by element and the latest event's quantities (the aggregates rollup_sums and
# rollup_latest of the migrations), so the groups are hashed over whole arrays.
PARTS_TO_WIDE = f"""rollup_sums(quantities) AS sums, count(*) AS count,
           rollup_latest(ts, id, quantities) AS last_values, max(ts) AS last_ts,
           {latest_id("ts", "id")} AS last_event_id"""
# Wide rows into coarser wide rows of the same meters (the model rollups).
WIDE_TO_WIDE = f"""rollup_sums(sums) AS sums, sum(count) AS count,
           rollup_latest(last_ts, last_event_id, last_values) AS last_values,
           max(last_ts) AS last_ts, {latest_id("last_ts", "last_event_id")} AS last_event_id"""
# The same for groups of one meter (single-value events): arrays of one element.
ONE_METER_WIDE = (
    "ARRAY[sum] AS sums, count, ARRAY[last_value] AS last_values, last_ts, last_event_id"
)
# The same for the maxes: null for rows without a max meter.
ONE_METER_MAXES = "CASE WHEN max_value IS NOT NULL THEN ARRAY[max_value] END"
# What the upkeep reads: event parts, one per event and set of dimensions (an event whose
# meters all keep its dimensions is one part): the meters (sorted) and their quantities.
PART_COLUMNS = (
    "tenant_id, id, ts, org_id, project_id, api_key_id, user_id, model, dimensions, "
    "meter_ids, quantities"
)


# The max meters' ids, for the statements that keep maxes: a small table, read once per
# statement. A row keeps maxes exactly when one of its meters is a max meter, whichever
# statement (ingestion or rebuild) writes it.
MAX_METER_IDS = "ARRAY(SELECT id FROM meters WHERE aggregation = 'max')"
WIDE_MAXES = f"CASE WHEN meter_ids && {MAX_METER_IDS} THEN rollup_max(quantities) END AS maxes"


def merge_on_conflict(table: str) -> str:
    """The upsert that adds a new per-meter cell into an existing one (the cube); `last` goes
    to the later (ts, id)."""
    return f"""DO UPDATE SET
        sum = {table}.sum + EXCLUDED.sum,
        count = {table}.count + EXCLUDED.count,
        last_value = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_event_id)
                               > ({table}.last_ts, {table}.last_event_id)
                          THEN EXCLUDED.last_value ELSE {table}.last_value END,
        last_event_id = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_event_id)
                                  > ({table}.last_ts, {table}.last_event_id)
                             THEN EXCLUDED.last_event_id ELSE {table}.last_event_id END,
        last_ts = GREATEST({table}.last_ts, EXCLUDED.last_ts),
        max_value = GREATEST({table}.max_value, EXCLUDED.max_value)"""


def merge_wide_on_conflict(table: str, *, with_max: bool = False) -> str:
    """The upsert that adds a new wide row into an existing one of the same meters; with_max:
    the new row may carry maxes (merged element by element with greatest)."""
    maxes = (
        f""",
        maxes = CASE WHEN EXCLUDED.maxes IS NULL THEN {table}.maxes
                     WHEN cardinality(EXCLUDED.maxes) = 1
                     THEN ARRAY[GREATEST({table}.maxes[1], EXCLUDED.maxes[1])]
                     ELSE rollup_max_step({table}.maxes, EXCLUDED.maxes) END"""
        if with_max
        else ""
    )
    newer = f"(EXCLUDED.last_ts, EXCLUDED.last_event_id) > ({table}.last_ts, {table}.last_event_id)"
    # One-meter rows (every single-value event's) add without the element-wise subquery.
    return f"""DO UPDATE SET
        sums = CASE WHEN cardinality(EXCLUDED.sums) = 1
                    THEN ARRAY[{table}.sums[1] + EXCLUDED.sums[1]]
                    ELSE rollup_sums_step({table}.sums, EXCLUDED.sums) END,
        count = {table}.count + EXCLUDED.count,
        last_values = CASE WHEN {newer} THEN EXCLUDED.last_values ELSE {table}.last_values END,
        last_event_id = CASE WHEN {newer} THEN EXCLUDED.last_event_id
                             ELSE {table}.last_event_id END,
        last_ts = GREATEST({table}.last_ts, EXCLUDED.last_ts){maxes}"""


def _wide_rows(source: str, *, with_max: bool = False) -> str:
    """Event parts (PART_COLUMNS of `source`) aggregated per rollup key and set of meters;
    with_max: with their maxes where a meter is a max meter."""
    maxes = f", {WIDE_MAXES}" if with_max else ""
    return f"""SELECT tenant_id, {bucket_of("ts")} AS bucket_start,
           coalesce(org_id, '') AS org_id, coalesce(project_id, '') AS project_id,
           coalesce(api_key_id, '') AS api_key_id, coalesce(user_id, '') AS user_id,
           coalesce(model, '') AS model, dimensions, meter_ids,
           {PARTS_TO_WIDE}{maxes}
    FROM {source}
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9"""


# The two upserts that end every ingest statement, from the CTEs model_buckets and buckets;
# `wide_from` selects the wide aggregates from them.
def _upserts(wide_from: str, maxes_from: str | None = None) -> str:
    """maxes_from: the expression of the rows' maxes (None: the statement keeps no maxes)."""
    with_max = maxes_from is not None
    columns = f"{WIDE_COLUMNS}, maxes" if with_max else WIDE_COLUMNS
    wide_from = f"{wide_from}, {maxes_from}" if with_max else wide_from
    return f"""model_upserted AS (
    INSERT INTO model_rollup_rows ({MODEL_WIDE_KEY}, {columns})
    SELECT {MODEL_WIDE_KEY}, {wide_from}
    FROM model_buckets
    ORDER BY {MODEL_WIDE_KEY}
    ON CONFLICT ({MODEL_WIDE_KEY}) {merge_wide_on_conflict("model_rollup_rows", with_max=with_max)}
    RETURNING 1
),
upserted AS (
    INSERT INTO rollup_rows ({WIDE_KEY}, {columns})
    SELECT {WIDE_KEY}, {wide_from}
    FROM buckets
    ORDER BY {WIDE_KEY}
    ON CONFLICT ({WIDE_KEY}) {merge_wide_on_conflict("rollup_rows", with_max=with_max)}
    RETURNING 1
)"""


def ingest_upkeep_ctes(source: str, *, with_max: bool = False) -> str:
    """The common table expressions that fold the event parts of the CTE `source` (newly
    inserted events as PART_COLUMNS) into both 15-minute tables, to be placed after `source` in
    the ingest statement: events and their rollups are written by one statement, so one
    transaction, with no extra round trip. An event reporting several meters (an LLM call's
    tokens) adds to one wide row per table, not one row per meter.

    Rows are aggregated per key and upserted in key order, so concurrent transactions lock
    rows in the same order and cannot deadlock. The same buckets, folded by model and
    dimensions, are upserted into model_rollup_rows, in key order too; every statement runs the
    same plan, so the two upserts always lock in one order. PostgreSQL runs unreferenced
    data-modifying CTEs last-listed first, so model_upserted is listed before upserted: its few
    rows, which every concurrent batch of a tenant touches, are then written last and locked
    for the shortest time before the commit.

    with_max (a statement holding an event of a max meter): rows of max meters keep their
    maxes too. Without it, nothing about maxes is computed or written."""
    model_maxes = ", rollup_max(maxes) AS maxes" if with_max else ""
    return f"""buckets AS (
    {_wide_rows(source, with_max=with_max)}
),
model_buckets AS (
    SELECT {MODEL_WIDE_KEY}, {WIDE_TO_WIDE}{model_maxes}
    FROM buckets
    GROUP BY 1, 2, 3, 4, 5
),
{_upserts(WIDE_COLUMNS, "maxes" if with_max else None)}"""


# Columns of newly inserted single-value events that single_upkeep_ctes reads.
SINGLE_SOURCE_COLUMNS = (
    "tenant_id, id, meter_id, value, ts, org_id, project_id, api_key_id, user_id, model, dimensions"
)


def single_upkeep_ctes(source: str, *, with_max: bool = False) -> str:
    """ingest_upkeep_ctes for a statement whose events all hold one quantity (the CTE
    `source`, SINGLE_SOURCE_COLUMNS): their rows are one-meter wide rows, aggregated in one
    pass without the per-position step, which costs a small group commit about a third of its
    statement time. Same tables, same key order, same upserts (so the two statements lock
    alike and cannot deadlock each other), same results."""
    if with_max:
        max_value = (
            f",\n           CASE WHEN meter_id = ANY({MAX_METER_IDS}) THEN max(value) END "
            "AS max_value"
        )
        model_max = ", max(max_value) AS max_value"
    else:
        max_value = model_max = ""
    return f"""buckets AS (
    SELECT tenant_id, {bucket_of("ts")} AS bucket_start,
           coalesce(org_id, '') AS org_id, coalesce(project_id, '') AS project_id,
           coalesce(api_key_id, '') AS api_key_id, coalesce(user_id, '') AS user_id,
           coalesce(model, '') AS model, dimensions, ARRAY[meter_id] AS meter_ids,
           sum(coalesce(value, 0)) AS sum, count(*) AS count,
           {latest("value", "ts", "id")} AS last_value,
           max(ts) AS last_ts,
           {latest_id("ts", "id")} AS last_event_id{max_value}
    FROM {source}
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, meter_id
),
model_buckets AS (
    SELECT {MODEL_WIDE_KEY}, {ROLLUP_AGGREGATES}{model_max}
    FROM buckets
    GROUP BY 1, 2, 3, 4, 5
),
{_upserts(ONE_METER_WIDE, ONE_METER_MAXES if with_max else None)}"""


REBUILD_DELETE_SQL = """
DELETE FROM rollup_rows WHERE tenant_id = $1 AND bucket_start >= $2 AND bucket_start < $3
"""


def event_parts(condition: str) -> str:
    """The parts (PART_COLUMNS) of the raw events `e` that meet `condition`: a single-quantity
    event as one part; a `values` event as one part per set of dimensions its meters keep
    (each meter keeps the dimensions it declares), meters sorted, as ingestion makes them."""
    return f"""
SELECT e.tenant_id, e.id, e.ts, e.org_id, e.project_id, e.api_key_id, e.user_id, e.model,
       e.dimensions, ARRAY[e.meter_id] AS meter_ids, ARRAY[e.value] AS quantities
FROM events e
WHERE {condition} AND e.meter_id IS NOT NULL
UNION ALL
SELECT e.tenant_id, e.id, e.ts, e.org_id, e.project_id, e.api_key_id, e.user_id, e.model,
       kept.dimensions, array_agg(q.meter_id ORDER BY q.meter_id),
       array_agg(q.value ORDER BY q.meter_id)
FROM events e
CROSS JOIN LATERAL unnest(e.meter_ids, e.quantities) AS q(meter_id, value)
JOIN meters m ON m.id = q.meter_id
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_object_agg(d.key, d.value), '{{}}'::jsonb) AS dimensions
    FROM jsonb_each(e.dimensions) AS d
    WHERE d.key = ANY(m.dimensions)
) AS kept
WHERE {condition} AND e.meter_id IS NULL
GROUP BY e.tenant_id, e.id, e.ts, e.org_id, e.project_id, e.api_key_id, e.user_id, e.model,
         kept.dimensions
"""


# The parts of a tenant's counted raw events in [$2, $3): canceled events count nowhere.
EVENT_PARTS_SQL = event_parts(
    "e.tenant_id = $1 AND e.ts >= $2 AND e.ts < $3 AND e.canceled_at IS NULL"
)
# What the rebuild writes of a 15-minute row besides its key, how it computes that from event
# parts, and how it folds those rows into model rows. A cancel recomputes rows with the same
# (service.rollups.withdraw), so an aggregate that rows gain is recomputed there too.
REBUILT_COLUMNS = f"{WIDE_COLUMNS}, maxes"
REBUILT_MODEL_AGGREGATES = f"{WIDE_TO_WIDE}, rollup_max(maxes) AS maxes"


def rebuilt_rows(parts: str) -> str:
    """The rebuild's rows (WIDE_KEY, REBUILT_COLUMNS) of the event parts `parts`."""
    return _wide_rows(parts, with_max=True)


REBUILD_INSERT_SQL = f"""
INSERT INTO rollup_rows ({WIDE_KEY}, {REBUILT_COLUMNS})
{rebuilt_rows(f"({EVENT_PARTS_SQL}) AS parts")}
"""
REBUILD_MODEL_DELETE_SQL = """
DELETE FROM model_rollup_rows WHERE tenant_id = $1 AND bucket_start >= $2 AND bucket_start < $3
"""
# From the rollups just rebuilt, in the same transaction: the same folding as ingestion.
REBUILD_MODEL_INSERT_SQL = f"""
INSERT INTO model_rollup_rows ({MODEL_WIDE_KEY}, {REBUILT_COLUMNS})
SELECT {MODEL_WIDE_KEY}, {REBUILT_MODEL_AGGREGATES}
FROM rollup_rows
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
        "UPDATE rollup_rows SET folded_sums = NULL, folded_count = 0 WHERE tenant_id = $1 "
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
