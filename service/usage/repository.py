"""All SQL of usage queries. They read rollups, never raw events: `model_rollups` when the
query groups and filters by model and dimensions only (a few rows per 15 minutes), else the
full-key `rollups`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from service.events.models import ATTRIBUTION_FIELDS


@dataclass(frozen=True, slots=True)
class MeterRecord:
    id: int
    event_name: str
    aggregation: str
    unit: str | None
    dimensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UsageAggregate:
    """One (meter, window, group) cell: `window` indexes the boundaries (1 = the first)."""

    meter_id: int
    window: int
    group: tuple[str | None, ...]
    sum: Decimal
    count: int
    last: Decimal | None


async def tenant_timezone(connection: asyncpg.Connection, tenant_id: str) -> str | None:
    value: str | None = await connection.fetchval(
        "SELECT timezone FROM tenants WHERE id = $1", tenant_id
    )
    return value


async def meters(connection: asyncpg.Connection, event_name: str | None) -> list[MeterRecord]:
    """The named meter (archived ones too: their history stays queryable), or all of them."""
    rows = await connection.fetch(
        "SELECT id, event_name, aggregation, unit, dimensions FROM meters "
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
        )
        for row in rows
    ]


def uses_model_rollups(keys: Sequence[str]) -> bool:
    """True when every group/filter key is `model` or a dimension: model_rollups answer."""
    return all(key == "model" or key not in ATTRIBUTION_FIELDS for key in keys)


async def aggregate_usage(
    connection: asyncpg.Connection,
    *,
    tenant_id: str,
    meter_ids: Sequence[int],
    boundaries: Sequence[datetime],
    group_by: Sequence[str],
    filters: Mapping[str, Sequence[str]],
) -> list[UsageAggregate]:
    """Sum, count and last per meter, window and group over [boundaries[0], boundaries[-1]).
    Every boundary is on a bucket edge, so each 15-minute bucket falls in exactly one window.
    Attribution keys are columns ('' = absent, answered as NULL); any other key is a
    dimension, read from the jsonb and passed as a parameter (never spliced into the SQL)."""
    table = "model_rollups" if uses_model_rollups([*group_by, *filters]) else "rollups"
    params: list[object] = [tenant_id, list(meter_ids), list(boundaries)]

    def param(value: object) -> str:
        params.append(value)
        return f"${len(params)}"

    def expression(key: str) -> str:
        if key in ATTRIBUTION_FIELDS:
            return f"r.{key}"
        return f"(r.dimensions ->> {param(key)}::text)"

    groups = [
        f"nullif({expression(key)}, '') AS g{i}"
        if key in ATTRIBUTION_FIELDS
        else f"{expression(key)} AS g{i}"
        for i, key in enumerate(group_by)
    ]
    conditions = [
        "r.tenant_id = $1",
        "r.meter_id = ANY($2::int[])",
        f"r.bucket_start >= {param(boundaries[0])}::timestamptz",
        f"r.bucket_start < {param(boundaries[-1])}::timestamptz",
    ]
    for key, values in filters.items():
        conditions.append(f"{expression(key)} = ANY({param(list(values))}::text[])")
    group_columns = ", ".join(str(i) for i in range(1, 3 + len(groups)))
    sql = f"""
SELECT r.meter_id, width_bucket(r.bucket_start, $3::timestamptz[]) AS window_index,
       {"".join(g + ", " for g in groups)}
       sum(r.sum) AS sum, sum(r.count)::bigint AS count,
       (array_agg(r.last_value ORDER BY r.last_ts DESC, r.last_event_id DESC))[1] AS last
FROM {table} r
WHERE {" AND ".join(conditions)}
GROUP BY {group_columns}
"""
    records = await connection.fetch(sql, *params)
    width = len(group_by)
    return [
        UsageAggregate(
            meter_id=record["meter_id"],
            window=record["window_index"],
            group=tuple(record[f"g{i}"] for i in range(width)),
            sum=record["sum"],
            count=record["count"],
            last=record["last"],
        )
        for record in records
    ]
