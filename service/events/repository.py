"""All SQL of ingestion: one statement stores a set of events and folds the accepted ones into
the rollups (with the upkeep SQL of service.rollups), in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg

from service.budgets.ingest import (
    COST_TOUCHED_ROW,
    PART_QUANTITIES,
    SINGLE_QUANTITIES,
    budget_ctes,
    record_cost_thresholds,
)
from service.rollups.upkeep import SINGLE_SOURCE_COLUMNS, ingest_upkeep_ctes, single_upkeep_ctes


# Every row of `input` is a validated event (a `values` event with its meters sorted by id);
# `parts` holds, for the few `values` events whose meters keep different sets of its
# dimensions, one row per such set (each meter keeps the dimensions it declares). Accepted
# events (those whose idempotency key is new) come back from `inserted`; `accepted` makes them
# parts (one per event unless split), which the store's upkeep CTEs fold into the rollups, in
# the same statement (one transaction, one round trip), as do the budget CTEs (the budgets the
# events count for, their thresholds and alerts: service.budgets.ingest).
def _ingest_sql(*, with_max: bool) -> str:
    return f"""
WITH input AS (
    SELECT * FROM unnest(
        $1::text[], $2::int[], $3::text[], $4::bytea[], $5::numeric[], $6::timestamptz[],
        $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::text[], $15::text[]
    ) AS t(tenant_id, meter_id, idempotency_key, payload_hash, value, ts,
           org_id, project_id, api_key_id, user_id, model, dimensions, metadata,
           meter_ids, quantities)
),
parts AS (
    SELECT * FROM unnest($16::text[], $17::text[], $18::text[], $19::text[], $20::text[])
        AS p(tenant_id, idempotency_key, meter_ids, quantities, dimensions)
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
    RETURNING tenant_id, id, idempotency_key, meter_id, value, meter_ids, quantities, ts,
              org_id, project_id, api_key_id, user_id, model, dimensions
),
accepted AS (
    SELECT tenant_id, id, ts, org_id, project_id, api_key_id, user_id, model, dimensions,
           coalesce(meter_ids, ARRAY[meter_id]) AS meter_ids,
           coalesce(quantities, ARRAY[value]) AS quantities
    FROM inserted i
    WHERE NOT EXISTS (
        SELECT FROM parts p
        WHERE p.tenant_id = i.tenant_id AND p.idempotency_key = i.idempotency_key
    )
    UNION ALL
    SELECT i.tenant_id, i.id, i.ts, i.org_id, i.project_id, i.api_key_id, i.user_id, i.model,
           p.dimensions::jsonb, p.meter_ids::int[], p.quantities::numeric[]
    FROM inserted i
    JOIN parts p ON p.tenant_id = i.tenant_id AND p.idempotency_key = i.idempotency_key
),
{PART_QUANTITIES},
{budget_ctes("budget_quantities")},
{ingest_upkeep_ctes("accepted", with_max=with_max)}
SELECT tenant_id, idempotency_key, id, NULL AS cost_periods FROM inserted{COST_TOUCHED_ROW}
"""


# The same for a set of single-value events only (the usual group commit and batch): no parts,
# one-meter rows aggregated in one pass (service.rollups.upkeep.single_upkeep_ctes).
def _single_ingest_sql(*, with_max: bool) -> str:
    return f"""
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
    RETURNING idempotency_key, {SINGLE_SOURCE_COLUMNS}
),
{SINGLE_QUANTITIES},
{budget_ctes("budget_quantities")},
{single_upkeep_ctes("inserted", with_max=with_max)}
SELECT tenant_id, idempotency_key, id, NULL AS cost_periods FROM inserted{COST_TOUCHED_ROW}
"""


# Statements holding an event of a max meter keep the rollups' maxes as well; the others
# (every sum and count batch) are the same statements without them.
INGEST_SQL = _ingest_sql(with_max=False)
MAX_INGEST_SQL = _ingest_sql(with_max=True)
SINGLE_INGEST_SQL = _single_ingest_sql(with_max=False)
SINGLE_MAX_INGEST_SQL = _single_ingest_sql(with_max=True)

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
    value but meter_ids (sorted) and quantities, and `parts` when its meters keep different
    sets of its dimensions: (meter_ids, quantities, dimensions JSON) per set."""

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
    parts: list[tuple[list[int], list[Decimal | None], str]] | None = None
    # Whether a max meter is among its meters: only statements holding such an event keep
    # the rollups' maxes, so sum and count ingestion pays nothing for them.
    has_max: bool = False

    def all_meter_ids(self) -> list[int]:
        return self.meter_ids if self.meter_id is None else [self.meter_id]  # type: ignore[return-value]


def _array_literal(items: Sequence[object]) -> str:
    """A PostgreSQL array literal of numbers (and NULLs), cast to int[] or numeric[] in SQL:
    asyncpg cannot pass arrays of arrays of different lengths as one parameter."""
    return "{" + ",".join("NULL" if i is None else str(i) for i in items) + "}"


class StoredKey(NamedTuple):
    """What the database holds for one (tenant_id, idempotency_key) after the insert (a named
    tuple: made for every event of a batch, and a frozen dataclass is several times slower)."""

    id: int
    payload_hash: bytes
    inserted: bool


async def store_events(
    connection: asyncpg.Connection, rows: Sequence[EventRow]
) -> dict[tuple[str, str], StoredKey]:
    """Insert unique-keyed rows (the caller removed repeats) and update rollups and budgets;
    return, for every key, the stored event and whether this call inserted it. One transaction:
    the statement, then the thresholds of the cost budgets it added to
    (service.budgets.ingest.record_cost_thresholds)."""
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
    with_max = any(r.has_max for r in ordered)
    if all(r.meter_ids is None for r in ordered):
        single = SINGLE_MAX_INGEST_SQL if with_max else SINGLE_INGEST_SQL
        async with connection.transaction():
            return await _stored(connection, single, columns, by_key)
    columns += [
        [None if r.meter_ids is None else _array_literal(r.meter_ids) for r in ordered],
        [None if r.quantities is None else _array_literal(r.quantities) for r in ordered],
    ]
    parts: list[list[Any]] = [[], [], [], [], []]
    for r in ordered:
        for meter_ids, quantities, dimensions in r.parts or ():
            parts[0].append(r.tenant_id)
            parts[1].append(r.idempotency_key)
            parts[2].append(_array_literal(meter_ids))
            parts[3].append(_array_literal(quantities))
            parts[4].append(dimensions)
    columns.extend(parts)
    async with connection.transaction():
        return await _stored(
            connection, MAX_INGEST_SQL if with_max else INGEST_SQL, columns, by_key
        )


async def _stored(
    connection: asyncpg.Connection,
    sql: str,
    columns: list[list[Any]],
    by_key: dict[tuple[str, str], EventRow],
) -> dict[tuple[str, str], StoredKey]:
    """Run one ingest statement; every key's stored event and whether this call inserted it."""
    result: dict[tuple[str, str], StoredKey] = {}
    records = await connection.fetch(sql, *columns)
    if records and records[-1]["idempotency_key"] is None:  # COST_TOUCHED_ROW
        touched = records.pop()["cost_periods"]
        await record_cost_thresholds(connection, [tuple(t) for t in touched])
    for record in records:
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
       e.quantities, e.canceled_at,
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
  AND ($7::text IS NULL OR e.idempotency_key = $7)
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
    idempotency_key: str | None = None,
) -> list[asyncpg.Record]:
    """Newest first by id (arrival order), keyset-paginated on id; with `idempotency_key`,
    the one event stored under it (if any)."""
    return list(
        await connection.fetch(
            LIST_EVENTS_SQL, tenant_id, meter_id, start, end, before_id, limit, idempotency_key
        )
    )


@dataclass(frozen=True, slots=True)
class EventToCancel:
    ts: datetime
    canceled_at: datetime | None


async def lock_event(
    connection: asyncpg.Connection, tenant_id: str, event_id: int
) -> EventToCancel | None:
    """The event, locked until the transaction ends (so two cancels of it take turns); None
    when the tenant has no such event."""
    row = await connection.fetchrow(
        "SELECT ts, canceled_at FROM events WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tenant_id,
        event_id,
    )
    if row is None:
        return None
    return EventToCancel(row["ts"], row["canceled_at"])


async def mark_canceled(connection: asyncpg.Connection, tenant_id: str, event_id: int) -> datetime:
    """Mark the (locked) event canceled now; returns when."""
    canceled_at: datetime = await connection.fetchval(
        "UPDATE events SET canceled_at = now() WHERE tenant_id = $1 AND id = $2 "
        "RETURNING canceled_at",
        tenant_id,
        event_id,
    )
    return canceled_at
