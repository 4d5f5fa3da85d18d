"""All SQL of ingestion: one statement stores a set of events and folds the accepted ones into
the rollups, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

# Rollups are keyed by 15-minute buckets (see models.BUCKET_MINUTES); the origin is any
# instant on a quarter hour.
BUCKET_SQL = "date_bin('15 minutes', {ts}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
ROLLUP_KEY = (
    "tenant_id, meter_id, bucket_start, org_id, project_id, api_key_id, user_id, model, dimensions"
)
# The coarse rollups usage queries read when they group and filter by model and dimensions only.
MODEL_ROLLUP_KEY = "tenant_id, meter_id, bucket_start, model, dimensions"
# Folds rolled-up rows (sum, count, last_value, last_ts, last_event_id) into coarser ones.
MODEL_ROLLUP_AGGREGATES = """sum(sum) AS sum, sum(count) AS count,
           (array_agg(last_value ORDER BY last_ts DESC, last_event_id DESC))[1] AS last_value,
           max(last_ts) AS last_ts,
           (array_agg(last_event_id ORDER BY last_ts DESC, last_event_id DESC))[1]
               AS last_event_id"""


def _merge_on_conflict(table: str) -> str:
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


# Every row of `input` is a validated event. Accepted events (those whose idempotency key is
# new) come back from `inserted`; they are aggregated per rollup key and upserted in key
# order, so concurrent transactions lock rollup rows in the same order and cannot deadlock.
# The same buckets, folded by model and dimensions, are upserted into model_rollups, in key
# order too; every statement runs the same plan, so the two upserts always lock in one order.
# PostgreSQL runs unreferenced data-modifying CTEs last-listed first, so model_upserted is
# listed before upserted: its few rows, which every concurrent batch of a tenant touches, are
# then written last and locked for the shortest time before the commit.
INGEST_SQL = f"""
WITH input AS (
    SELECT * FROM unnest(
        $1::text[], $2::int[], $3::text[], $4::bytea[], $5::numeric[], $6::timestamptz[],
        $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[]
    ) AS t(tenant_id, meter_id, idempotency_key, payload_hash, value, ts,
           org_id, project_id, api_key_id, user_id, model, dimensions, metadata)
),
inserted AS (
    INSERT INTO events (tenant_id, meter_id, idempotency_key, payload_hash, value, ts,
                        org_id, project_id, api_key_id, user_id, model, dimensions, metadata)
    SELECT tenant_id, meter_id, idempotency_key, payload_hash, value, ts,
           org_id, project_id, api_key_id, user_id, model, dimensions::jsonb, metadata::jsonb
    FROM input
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
    RETURNING tenant_id, id, idempotency_key, meter_id, value, ts,
              org_id, project_id, api_key_id, user_id, model, dimensions
),
buckets AS (
    SELECT tenant_id, meter_id, {BUCKET_SQL.format(ts="ts")} AS bucket_start,
           coalesce(org_id, '') AS org_id, coalesce(project_id, '') AS project_id,
           coalesce(api_key_id, '') AS api_key_id, coalesce(user_id, '') AS user_id,
           coalesce(model, '') AS model, dimensions,
           sum(coalesce(value, 0)) AS sum, count(*) AS count,
           (array_agg(value ORDER BY ts DESC, id DESC))[1] AS last_value,
           max(ts) AS last_ts,
           (array_agg(id ORDER BY ts DESC, id DESC))[1] AS last_event_id
    FROM inserted
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
),
model_buckets AS (
    SELECT {MODEL_ROLLUP_KEY}, {MODEL_ROLLUP_AGGREGATES}
    FROM buckets
    GROUP BY 1, 2, 3, 4, 5
),
model_upserted AS (
    INSERT INTO model_rollups ({MODEL_ROLLUP_KEY}, sum, count, last_value, last_ts, last_event_id)
    SELECT {MODEL_ROLLUP_KEY}, sum, count, last_value, last_ts, last_event_id
    FROM model_buckets
    ORDER BY {MODEL_ROLLUP_KEY}
    ON CONFLICT ({MODEL_ROLLUP_KEY}) {_merge_on_conflict("model_rollups")}
    RETURNING 1
),
upserted AS (
    INSERT INTO rollups ({ROLLUP_KEY}, sum, count, last_value, last_ts, last_event_id)
    SELECT {ROLLUP_KEY}, sum, count, last_value, last_ts, last_event_id
    FROM buckets
    ORDER BY {ROLLUP_KEY}
    ON CONFLICT ({ROLLUP_KEY}) {_merge_on_conflict("rollups")}
    RETURNING 1
)
SELECT tenant_id, idempotency_key, id FROM inserted
"""

EXISTING_SQL = """
SELECT e.tenant_id, e.idempotency_key, e.id, e.payload_hash
FROM unnest($1::text[], $2::text[]) AS k(tenant_id, idempotency_key)
JOIN events e ON e.tenant_id = k.tenant_id AND e.idempotency_key = k.idempotency_key
"""

MARK_METERS_USED_SQL = (
    "UPDATE meters SET has_events = true WHERE id = ANY($1::int[]) AND NOT has_events"
)


@dataclass(slots=True)
class EventRow:
    """A validated event, ready to store (not frozen: built per event on the hot path, and a
    frozen dataclass' __init__ is several times slower)."""

    tenant_id: str
    meter_id: int
    idempotency_key: str
    payload_hash: bytes
    value: Decimal | None
    ts: datetime
    org_id: str | None
    project_id: str | None
    api_key_id: str | None
    user_id: str | None
    model: str | None
    dimensions_json: str
    metadata_json: str | None


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What the database holds for one (tenant_id, idempotency_key) after the insert."""

    id: int
    payload_hash: bytes
    inserted: bool


async def store_events(
    connection: asyncpg.Connection, rows: Sequence[EventRow]
) -> dict[tuple[str, str], StoredKey]:
    """Insert unique-keyed rows (the caller removed repeats) and update rollups; return, for
    every key, the stored event and whether this call inserted it. Runs in the caller's
    transaction."""
    if not rows:
        return {}
    ordered = sorted(rows, key=lambda r: (r.tenant_id, r.idempotency_key))
    columns: list[list[Any]] = [
        [r.tenant_id for r in ordered],
        [r.meter_id for r in ordered],
        [r.idempotency_key for r in ordered],
        [r.payload_hash for r in ordered],
        [r.value for r in ordered],
        [r.ts for r in ordered],
        [r.org_id for r in ordered],
        [r.project_id for r in ordered],
        [r.api_key_id for r in ordered],
        [r.user_id for r in ordered],
        [r.model for r in ordered],
        [r.dimensions_json for r in ordered],
        [r.metadata_json for r in ordered],
    ]
    by_key = {(r.tenant_id, r.idempotency_key): r for r in ordered}
    result: dict[tuple[str, str], StoredKey] = {}
    for record in await connection.fetch(INGEST_SQL, *columns):
        key = (record["tenant_id"], record["idempotency_key"])
        result[key] = StoredKey(
            id=record["id"], payload_hash=by_key[key].payload_hash, inserted=True
        )
    missing = [key for key in by_key if key not in result]
    if missing:
        existing = await connection.fetch(
            EXISTING_SQL, [k[0] for k in missing], [k[1] for k in missing]
        )
        for record in existing:
            key = (record["tenant_id"], record["idempotency_key"])
            result[key] = StoredKey(
                id=record["id"], payload_hash=bytes(record["payload_hash"]), inserted=False
            )
    return result


async def mark_meters_used(connection: asyncpg.Connection, meter_ids: Sequence[int]) -> None:
    await connection.execute(MARK_METERS_USED_SQL, list(meter_ids))


LIST_EVENTS_SQL = """
SELECT e.id, e.tenant_id, m.event_name, e.idempotency_key, e.ts, e.received_at, e.value,
       e.org_id, e.project_id, e.api_key_id, e.user_id, e.model, e.dimensions, e.metadata
FROM events e JOIN meters m ON m.id = e.meter_id
WHERE e.tenant_id = $1
  AND ($2::int IS NULL OR e.meter_id = $2)
  AND ($3::timestamptz IS NULL OR e.ts >= $3)
  AND ($4::timestamptz IS NULL OR e.ts < $4)
  AND ($5::bigint IS NULL OR e.id < $5)
ORDER BY e.id DESC
LIMIT $6
"""


async def list_events(
    connection: asyncpg.Connection,
    tenant_id: str,
    meter_id: int | None,
    start: datetime | None,
    end: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first by id (arrival order), keyset-paginated on id."""
    return list(
        await connection.fetch(LIST_EVENTS_SQL, tenant_id, meter_id, start, end, before_id, limit)
    )


REBUILD_DELETE_SQL = """
DELETE FROM rollups WHERE tenant_id = $1 AND bucket_start >= $2 AND bucket_start < $3
"""
REBUILD_INSERT_SQL = f"""
INSERT INTO rollups ({ROLLUP_KEY}, sum, count, last_value, last_ts, last_event_id)
SELECT tenant_id, meter_id, {BUCKET_SQL.format(ts="ts")} AS bucket_start,
       coalesce(org_id, ''), coalesce(project_id, ''), coalesce(api_key_id, ''),
       coalesce(user_id, ''), coalesce(model, ''), dimensions,
       sum(coalesce(value, 0)), count(*),
       (array_agg(value ORDER BY ts DESC, id DESC))[1], max(ts),
       (array_agg(id ORDER BY ts DESC, id DESC))[1]
FROM events
WHERE tenant_id = $1 AND ts >= $2 AND ts < $3
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
"""


REBUILD_MODEL_DELETE_SQL = """
DELETE FROM model_rollups WHERE tenant_id = $1 AND bucket_start >= $2 AND bucket_start < $3
"""
# From the rollups just rebuilt, in the same transaction: the same folding as ingestion.
REBUILD_MODEL_INSERT_SQL = f"""
INSERT INTO model_rollups ({MODEL_ROLLUP_KEY}, sum, count, last_value, last_ts, last_event_id)
SELECT {MODEL_ROLLUP_KEY}, {MODEL_ROLLUP_AGGREGATES}
FROM rollups
WHERE tenant_id = $1 AND bucket_start >= $2 AND bucket_start < $3
GROUP BY 1, 2, 3, 4, 5
"""


async def rebuild_rollups(
    connection: asyncpg.Connection, tenant_id: str, start: datetime, end: datetime
) -> tuple[int, int]:
    """Replace the tenant's rollups in [start, end) (bucket-aligned) with ones recomputed from
    raw events, and its model rollups with ones folded from those. Returns (rollup rows
    deleted, rollup rows written)."""
    # SHARE mode blocks concurrent ingestion (ROW EXCLUSIVE) until this transaction ends, so no
    # event can be counted both by the rebuild and by an in-flight insert.
    await connection.execute("LOCK TABLE events IN SHARE MODE")
    deleted = await connection.execute(REBUILD_DELETE_SQL, tenant_id, start, end)
    written = await connection.execute(REBUILD_INSERT_SQL, tenant_id, start, end)
    await connection.execute(REBUILD_MODEL_DELETE_SQL, tenant_id, start, end)
    await connection.execute(REBUILD_MODEL_INSERT_SQL, tenant_id, start, end)
    return int(deleted.split()[-1]), int(written.split()[-1])
