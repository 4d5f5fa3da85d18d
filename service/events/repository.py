"""All SQL of ingestion: one statement stores a set of events and folds the accepted ones into
the rollups (with the upkeep SQL of service.rollups), in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from service.rollups.upkeep import UPKEEP_SOURCE_COLUMNS, ingest_upkeep_ctes

# Every row of `input` is a validated event. Accepted events (those whose idempotency key is
# new) come back from `inserted` and are folded into the rollups by the store's upkeep CTEs,
# in the same statement (one transaction, one round trip).
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
    RETURNING idempotency_key, {UPKEEP_SOURCE_COLUMNS}
),
{ingest_upkeep_ctes("inserted")}
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


async def tenant_timezone(connection: asyncpg.Connection, tenant_id: str) -> str | None:
    """The tenant's IANA zone, None when there is no such tenant."""
    value: str | None = await connection.fetchval(
        "SELECT timezone FROM tenants WHERE id = $1", tenant_id
    )
    return value


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
