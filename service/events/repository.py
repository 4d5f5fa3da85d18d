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

# Every row of `input` is a validated event; `quantities` holds the quantities of its `values`
# events (one row per meter, with the dimensions that meter keeps, null for all of the
# event's). Accepted events (those whose idempotency key is new) come back from `inserted`;
# `accepted` turns them into one row per quantity, which the store's upkeep CTEs fold into the
# rollups, in the same statement (one transaction, one round trip).
INGEST_SQL = f"""
WITH input AS (
    SELECT * FROM unnest(
        $1::text[], $2::int[], $3::text[], $4::bytea[], $5::numeric[], $6::timestamptz[],
        $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::text[], $15::text[]
    ) AS t(tenant_id, meter_id, idempotency_key, payload_hash, value, ts,
           org_id, project_id, api_key_id, user_id, model, dimensions, metadata,
           meter_ids, quantities)
),
quantities AS (
    SELECT * FROM unnest($16::text[], $17::text[], $18::int[], $19::numeric[], $20::text[])
        AS q(tenant_id, idempotency_key, meter_id, value, dimensions)
),
inserted AS (
    INSERT INTO events (tenant_id, meter_id, idempotency_key, payload_hash, value, ts,
                        org_id, project_id, api_key_id, user_id, model, dimensions, metadata,
                        meter_ids, quantities)
    SELECT tenant_id, meter_id, idempotency_key, payload_hash, value, ts,
           org_id, project_id, api_key_id, user_id, model, dimensions::jsonb, metadata::jsonb,
           meter_ids::int[], quantities::numeric[]
    FROM input
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
    RETURNING idempotency_key, {UPKEEP_SOURCE_COLUMNS}
),
accepted AS (
    SELECT {UPKEEP_SOURCE_COLUMNS} FROM inserted WHERE meter_id IS NOT NULL
    UNION ALL
    SELECT i.tenant_id, i.id, q.meter_id, q.value, i.ts, i.org_id, i.project_id, i.api_key_id,
           i.user_id, i.model, coalesce(q.dimensions::jsonb, i.dimensions)
    FROM inserted i
    JOIN quantities q ON q.tenant_id = i.tenant_id AND q.idempotency_key = i.idempotency_key
    WHERE i.meter_id IS NULL
),
{ingest_upkeep_ctes("accepted")}
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
    frozen dataclass' __init__ is several times slower). A `values` event has no meter_id and
    value but meter_ids, quantities and, per quantity, the dimensions that meter keeps as JSON
    (None: all of the event's)."""

    tenant_id: str
    meter_id: int | None
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
    meter_ids: list[int] | None = None
    quantities: list[Decimal | None] | None = None
    quantity_dimensions: list[str | None] | None = None

    def all_meter_ids(self) -> list[int]:
        return self.meter_ids if self.meter_id is None else [self.meter_id]  # type: ignore[return-value]


def _array_literal(items: Sequence[object]) -> str:
    """A PostgreSQL array literal of numbers (and NULLs), cast to int[] or numeric[] in SQL:
    asyncpg cannot pass arrays of arrays of different lengths as one parameter."""
    return "{" + ",".join("NULL" if i is None else str(i) for i in items) + "}"


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
        [None if r.meter_ids is None else _array_literal(r.meter_ids) for r in ordered],
        [None if r.quantities is None else _array_literal(r.quantities) for r in ordered],
    ]
    q_tenant: list[str] = []
    q_key: list[str] = []
    q_meter: list[int] = []
    q_value: list[Decimal | None] = []
    q_dimensions: list[str | None] = []
    for r in ordered:
        if r.meter_ids is None:
            continue
        assert r.quantities is not None and r.quantity_dimensions is not None
        q_tenant.extend([r.tenant_id] * len(r.meter_ids))
        q_key.extend([r.idempotency_key] * len(r.meter_ids))
        q_meter.extend(r.meter_ids)
        q_value.extend(r.quantities)
        q_dimensions.extend(r.quantity_dimensions)
    columns.extend([q_tenant, q_key, q_meter, q_value, q_dimensions])
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


# A `values` event comes with its meters' event_names in the order of its quantities.
LIST_EVENTS_SQL = """
SELECT e.id, e.tenant_id, m.event_name, e.idempotency_key, e.ts, e.received_at, e.value,
       e.org_id, e.project_id, e.api_key_id, e.user_id, e.model, e.dimensions, e.metadata,
       e.quantities,
       CASE WHEN e.meter_ids IS NOT NULL THEN ARRAY(
           SELECT vm.event_name FROM unnest(e.meter_ids) WITH ORDINALITY AS u(id, n)
           JOIN meters vm ON vm.id = u.id ORDER BY u.n
       ) END AS value_names
FROM events e LEFT JOIN meters m ON m.id = e.meter_id
WHERE e.tenant_id = $1
  AND ($2::int IS NULL OR e.meter_id = $2 OR $2 = ANY(e.meter_ids))
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
