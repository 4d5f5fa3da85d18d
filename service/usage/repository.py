"""The SQL usage queries need besides the rollups (read through service.rollups): the
tenant's time zone and the meters."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class MeterRecord:
    id: int
    event_name: str
    aggregation: str
    unit: str | None
    dimensions: tuple[str, ...]
    unique_key: str | None = None


async def tenant_timezone(connection: asyncpg.Connection, tenant_id: str) -> str | None:
    value: str | None = await connection.fetchval(
        "SELECT timezone FROM tenants WHERE id = $1", tenant_id
    )
    return value


async def meters(connection: asyncpg.Connection, event_name: str | None) -> list[MeterRecord]:
    """The named meter (archived ones too: their history stays queryable), or all of them."""
    rows = await connection.fetch(
        "SELECT id, event_name, aggregation, unit, dimensions, unique_key FROM meters "
        "WHERE $1::text IS NULL OR event_name = $1 ORDER BY event_name",
        event_name,
    )
    return [
        MeterRecord(
            id=row["id"],
            event_name=row["event_name"],
            aggregation=row["aggregation"],
            unit=row["unit"],
            dimensions=tuple(row["dimensions"]),
            unique_key=row["unique_key"],
        )
        for row in rows
    ]
