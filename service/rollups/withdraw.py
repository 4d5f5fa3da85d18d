"""Taking a canceled event out of every aggregate, in the cancel's transaction.

The 15-minute rows the event counted in (one per part: `rollup_rows` and `model_rollup_rows`)
are recomputed from the raw events that still count, with the rebuild's definitions, so every
aggregate a row holds (sum, count, last, and whatever aggregates the rebuild writes later)
comes out as if the event had never been sent.

The coarse cube (service.rollups.fold) holds what the fold added of those rows. The fold
knows a row is pending by its count (count <> folded_count): every event adds one. A cancel
lowers a folded row's count, so a later event could bring it back to folded_count with sums
still differing, and the row would never be folded again. So a cancel never leaves a folded
row pending: it folds the rows it changed at once (the fold's own statement, under the fold's
advisory lock): a sum or count drop reaches the cube as a negative delta, in the same
transaction, and a row left with no event is folded as zeros, then deleted.

A cell's latest value (`last`, shown for every meter) cannot be un-merged, so the cells
whose latest event was the canceled one take it again from the 15-minute rows they cover
(RELATEST_SQL), and a cell left with no event is deleted: no cell ever holds a count of 0.

Otherwise the event's tenant-month of the cube is reset as a rebuild resets it (cells
dropped, the month's rows pending again, refolded by the next fold; readers exact meanwhile,
only slower). That happens when a row the event counted in was folded and:

- a meter of it aggregates anything but sum and count (a merged latest or largest value of
  a whole row cannot be taken apart; any aggregation the rebuild writes later), or
- it has events the fold has not taken yet (count <> folded_count: whether the event is in
  the cube is then unknown).

Locks, in the order ingestion and the fold take them, so none of them deadlock with a cancel:
the fold's advisory lock first (a fold chunk holds it while it locks rows), then the rollup
rows in key order in one statement (with a reset, the month's folded rows too), then the
model rollup rows in key order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import asyncpg

from service.common.errors import Conflict
from service.common.time import floor_to_quarter_hour
from service.rollups.fold import CUBE_KEY, fold_sql
from service.rollups.levels import (
    DIMENSIONS,
    PROJECTION_FIELDS,
    PROJECTIONS,
    Grain,
    grain_end,
    grain_start,
)
from service.rollups.models import BUCKET
from service.rollups.upkeep import (
    FOLD_LOCK_KEY,
    MODEL_WIDE_KEY,
    REBUILT_COLUMNS,
    REBUILT_MODEL_AGGREGATES,
    WIDE_KEY,
    bucket_of,
    event_parts,
    rebuilt_rows,
    reset_cube,
)


class RollupsOutOfDate(Conflict):
    code, title = "rollups_out_of_date", "Rollups need a rebuild"


# Aggregations whose folded part the fold can take back by adding a negative delta.
_SUBTRACTABLE = ("sum", "count")


def _qualified(alias: str, columns: str) -> str:
    """'a, b' as 'x.a, x.b'."""
    return ", ".join(f"{alias}.{column.strip()}" for column in columns.split(","))


def _same(left: str, right: str, key: str) -> str:
    return f"({_qualified(left, key)}) = ({_qualified(right, key)})"


# The rows of the event $2 of tenant $1 alone ($1, $2 throughout), keyed as the 15-minute rows
# it counted in; `touched`: those keys.
_EVENT_ROWS = rebuilt_rows(f"({event_parts('e.tenant_id = $1 AND e.id = $2')}) AS parts")
_TOUCHED = f"""touched AS (
    SELECT {WIDE_KEY}
    FROM ({_EVENT_ROWS}) AS w
)"""

# What the decision needs of each row the event counted in. Read without locking them: under
# the fold's advisory lock nothing but ingestion changes them, and ingestion only adds events.
TOUCHED_STATE_SQL = f"""
WITH {_TOUCHED}
SELECT r.count, r.folded_count,
       EXISTS (SELECT FROM meters m WHERE m.id = ANY(r.meter_ids)
               AND m.aggregation NOT IN {_SUBTRACTABLE!r}) AS other_aggregation
FROM rollup_rows AS r
JOIN touched AS t ON {_same("r", "t", WIDE_KEY)}
"""
_KEY_ORDER = _qualified("r", WIDE_KEY)
# The rows the event counted in, locked in key order.
LOCK_SQL = f"""
WITH {_TOUCHED}
SELECT 1
FROM rollup_rows AS r
JOIN touched AS t ON {_same("r", "t", WIDE_KEY)}
ORDER BY {_KEY_ORDER}
FOR UPDATE OF r
"""
# For a reset: the same rows (all of the event's bucket $4) and the month's folded rows
# [$2, $3) (the reset rewrites them), in one key order, so a cancel never holds a row while
# waiting for one earlier in the order (as ingestion may, the other way round).
LOCK_FOR_RESET_SQL = f"""
SELECT 1
FROM rollup_rows AS r
WHERE r.tenant_id = $1 AND r.bucket_start >= $2 AND r.bucket_start < $3
  AND (r.folded_count <> 0 OR r.bucket_start = $4)
ORDER BY {_KEY_ORDER}
FOR UPDATE OF r
"""

COUNT_TOUCHED_SQL = f"WITH {_TOUCHED} SELECT count(*) FROM touched"


# RELATEST_SQL's parameters after the tenant and the event: the start of the event's bucket of
# each grain, then their ends, in the order of Grain.
_STARTS = {grain: f"${3 + index}" for index, grain in enumerate(Grain)}
_ENDS = {grain: f"${3 + len(Grain) + index}" for index, grain in enumerate(Grain)}


def _candidate_cells() -> str:
    """The keys of the cube cells the rows `touched` fold into, for each of their meters: per
    grain (the event's bucket of it: _STARTS) and per projection, the row's key with the
    fields the projection drops blank (as the fold stores them), in the cube's "C" collation,
    so each is one lookup of the cube's primary key."""
    grains = ", ".join(
        f"('{grain.value}', {projection}, {_STARTS[grain]}::timestamptz)"
        for grain in Grain
        for projection in PROJECTIONS[grain]
    )
    fields = ", ".join(
        f"""CASE WHEN g.projection & {bit} <> 0 THEN t.{column} ELSE '' END COLLATE "C" """
        f"AS {column}"
        for column, bit in PROJECTION_FIELDS.items()
    )
    return f"""SELECT DISTINCT t.tenant_id, m.meter_id, g.grain, g.projection, g.bucket_start,
           {fields},
           CASE WHEN g.projection & {DIMENSIONS} <> 0 THEN t.dimensions ELSE '{{}}'::jsonb END
               AS dimensions
    FROM touched AS t
    CROSS JOIN unnest(t.meter_ids) AS m(meter_id)
    CROSS JOIN (VALUES {grains}) AS g(grain, projection, bucket_start)"""


# The cells whose latest event was the canceled one, once its drop is folded: their latest
# event taken again from the 15-minute rows they cover (up to the end of the cell's bucket:
# _ENDS), all current (a pending event there is in the cell's latest already or will
# be merged by the fold: merging a latest twice changes nothing). A row's events lie in its
# bucket, so the latest event is in the last bucket with a row of the cell: found by the
# primary key backwards, without reading the month. Cells left with no event are deleted.
_MASKED = " AND ".join(
    [
        *(
            f'(c.projection & {bit} = 0 OR r.{column} = c.{column} COLLATE "C")'
            for column, bit in PROJECTION_FIELDS.items()
        ),
        f"(c.projection & {DIMENSIONS} = 0 OR r.dimensions = c.dimensions)",
    ]
)
_CELL_ROWS = f"""r.tenant_id = c.tenant_id AND r.meter_id = c.meter_id AND {_MASKED}"""
_END_CASES = " ".join(f"WHEN '{grain.value}' THEN {_ENDS[grain]}::timestamptz" for grain in Grain)
RELATEST_SQL = f"""
WITH {_TOUCHED},
cells AS (
    SELECT c.*
    FROM ({_candidate_cells()}) AS k
    JOIN rollup_cube AS c ON {_same("c", "k", CUBE_KEY)}
    WHERE c.last_event_id = $2
),
latest AS (
    SELECT {_qualified("c", CUBE_KEY)}, l.latest, l.last_ts
    FROM cells AS c
    LEFT JOIN LATERAL (
        SELECT r.bucket_start
        FROM rollups AS r
        WHERE {_CELL_ROWS} AND r.bucket_start >= c.bucket_start
          AND r.bucket_start < CASE c.grain {_END_CASES} END
        ORDER BY r.bucket_start DESC
        LIMIT 1
    ) AS b ON true
    LEFT JOIN LATERAL (
        SELECT max(ARRAY[extract(epoch FROM r.last_ts), r.last_event_id::numeric,
                         r.last_value]) AS latest,
               max(r.last_ts) AS last_ts
        FROM rollups AS r
        WHERE {_CELL_ROWS} AND r.bucket_start = b.bucket_start
    ) AS l ON true
),
updated AS (
    UPDATE rollup_cube AS c
    SET last_value = l.latest[3], last_ts = l.last_ts, last_event_id = l.latest[2]::bigint
    FROM latest AS l
    WHERE {_same("c", "l", CUBE_KEY)} AND c.count <> 0
    RETURNING 1
)
DELETE FROM rollup_cube AS c
USING cells AS l
WHERE {_same("c", "l", CUBE_KEY)} AND c.count = 0
"""

# The rows the event counted in, recomputed from the raw events of its bucket [$3, $4) that
# still count (the event is already marked canceled): rows left with events are rewritten
# (their folded part kept); rows left with none are deleted, or, when folded, zeroed (no
# event, so no latest one either), to be folded as such and deleted (FOLD_TOUCHED_SQL).
RECOMPUTE_SQL = f"""
WITH {_TOUCHED},
fresh AS (
    SELECT w.*
    FROM ({
    rebuilt_rows(
        "("
        + event_parts("e.tenant_id = $1 AND e.ts >= $3 AND e.ts < $4 AND e.canceled_at IS NULL")
        + ") AS parts"
    )
}) AS w
    JOIN touched AS t ON {_same("w", "t", WIDE_KEY)}
),
updated AS (
    UPDATE rollup_rows AS r
    SET ({REBUILT_COLUMNS}) = ({_qualified("f", REBUILT_COLUMNS)})
    FROM fresh AS f
    WHERE {_same("r", "f", WIDE_KEY)}
    RETURNING 1
),
emptied AS (
    SELECT t.* FROM touched AS t
    WHERE NOT EXISTS (SELECT FROM fresh AS f WHERE {_same("f", "t", WIDE_KEY)})
),
zeroed AS (
    UPDATE rollup_rows AS r
    SET sums = array_fill(0::numeric, ARRAY[cardinality(r.meter_ids)]), count = 0,
        last_values = array_fill(NULL::numeric, ARRAY[cardinality(r.meter_ids)]),
        last_ts = '-infinity', last_event_id = 0
    FROM emptied AS t
    WHERE {_same("r", "t", WIDE_KEY)} AND r.folded_count <> 0
    RETURNING 1
),
deleted AS (
    DELETE FROM rollup_rows AS r
    USING emptied AS t
    WHERE {_same("r", "t", WIDE_KEY)} AND r.folded_count = 0
    RETURNING 1
)
SELECT (SELECT count(*) FROM updated) AS updated,
       (SELECT count(*) FROM zeroed) + (SELECT count(*) FROM deleted) AS deleted
"""
# The folded rows the event counted in, folded now whether pending or not (a lower count may
# equal folded_count again), then the zeroed ones deleted.
FOLD_TOUCHED_SQL = fold_sql(
    f"({WIDE_KEY}) IN (SELECT {WIDE_KEY} FROM ({_EVENT_ROWS}) AS w) AND folded_count <> 0"
)
DELETE_ZEROED_SQL = (
    "DELETE FROM rollup_rows WHERE tenant_id = $1 AND bucket_start = $2 AND count = 0"
)

# The model rollup rows of the event's parts (the 15-minute rows folded by model and
# dimensions), locked in key order.
_TOUCHED_MODEL = f"""touched_model AS (
    SELECT DISTINCT tenant_id, {bucket_of("ts")} AS bucket_start, coalesce(model, '') AS model,
           dimensions, meter_ids
    FROM ({event_parts("e.tenant_id = $1 AND e.id = $2")}) AS parts
)"""
LOCK_MODEL_SQL = f"""
WITH {_TOUCHED_MODEL}
SELECT 1
FROM model_rollup_rows AS r
JOIN touched_model AS t ON {_same("r", "t", MODEL_WIDE_KEY)}
ORDER BY {_qualified("r", MODEL_WIDE_KEY)}
FOR UPDATE OF r
"""
# ... and recomputed from the 15-minute rows just recomputed, as the rebuild folds them.
RECOMPUTE_MODEL_SQL = f"""
WITH {_TOUCHED_MODEL},
fresh AS (
    SELECT {_qualified("r", MODEL_WIDE_KEY)}, {REBUILT_MODEL_AGGREGATES}
    FROM rollup_rows AS r
    JOIN touched_model AS t
      ON (r.tenant_id, r.bucket_start, r.model, r.dimensions, r.meter_ids)
       = (t.tenant_id, t.bucket_start, t.model, t.dimensions, t.meter_ids)
    GROUP BY 1, 2, 3, 4, 5
),
updated AS (
    UPDATE model_rollup_rows AS r
    SET ({REBUILT_COLUMNS}) = ({_qualified("f", REBUILT_COLUMNS)})
    FROM fresh AS f
    WHERE {_same("r", "f", MODEL_WIDE_KEY)}
    RETURNING 1
)
DELETE FROM model_rollup_rows AS r
USING touched_model AS t
WHERE {_same("r", "t", MODEL_WIDE_KEY)}
  AND NOT EXISTS (SELECT FROM fresh AS f WHERE {_same("f", "t", MODEL_WIDE_KEY)})
"""


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """What taking an event out of the rollups did: rows rewritten and deleted, and how the
    cube was kept exact: `unfolded` (no row of the event was folded: nothing to do),
    `delta` (its drop folded at once) or `reset` (the tenant-month reset)."""

    rows_updated: int
    rows_deleted: int
    cube: Literal["unfolded", "delta", "reset"]


async def withdraw_event(
    connection: asyncpg.Connection,
    tenant_id: str,
    event_id: int,
    ts: datetime,
) -> Withdrawal:
    """Take event `event_id` (at `ts`), already marked canceled in the
    caller's transaction, out of the 15-minute rollups, the model rollups and the cube."""
    await connection.execute("SELECT pg_advisory_xact_lock($1)", FOLD_LOCK_KEY)
    rows = await connection.fetch(TOUCHED_STATE_SQL, tenant_id, event_id)
    if len(rows) != await connection.fetchval(COUNT_TOUCHED_SQL, tenant_id, event_id):
        # A `values` event split by its meters' dimensions when it was accepted; a meter
        # declaring one more dimension since splits it otherwise now.
        raise RollupsOutOfDate(
            f"the rollups of event {event_id} were made before a meter of it declared another "
            "dimension; rebuild that range (python -m service rollups rebuild) and cancel again"
        )
    start = floor_to_quarter_hour(ts.astimezone(UTC))
    starts = [grain_start(grain, start) for grain in Grain]
    month = grain_start(Grain.MONTH, start)
    folded = [row for row in rows if row["folded_count"] > 0]
    reset = any(row["other_aggregation"] or row["count"] != row["folded_count"] for row in folded)
    if reset:
        await connection.fetch(
            LOCK_FOR_RESET_SQL, tenant_id, month, grain_end(Grain.MONTH, month), start
        )
        await reset_cube(connection, tenant_id, start, start + BUCKET)
    else:
        await connection.fetch(LOCK_SQL, tenant_id, event_id)
    result = await connection.fetchrow(RECOMPUTE_SQL, tenant_id, event_id, start, start + BUCKET)
    if folded and not reset:
        await connection.fetchrow(FOLD_TOUCHED_SQL, tenant_id, event_id)
        await connection.execute(DELETE_ZEROED_SQL, tenant_id, start)
        ends = [grain_end(grain, at) for grain, at in zip(Grain, starts, strict=True)]
        await connection.execute(RELATEST_SQL, tenant_id, event_id, *starts, *ends)
    await connection.fetch(LOCK_MODEL_SQL, tenant_id, event_id)
    await connection.execute(RECOMPUTE_MODEL_SQL, tenant_id, event_id)
    cube: Literal["unfolded", "delta", "reset"] = (
        "reset" if reset else "delta" if folded else "unfolded"
    )
    return Withdrawal(result["updated"], result["deleted"], cube)
