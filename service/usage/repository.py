"""The SQL usage queries need besides the rollups (read through service.rollups): the
tenant's time zone, the meters, and the JSON of a usage row rendered by PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg
import msgspec


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


def row_json_sql(
    add: Callable[[object], str],
    edges: Sequence[str],
    keys: Sequence[str],
    aggregations: Mapping[int, str],
) -> str:
    """An SQL expression rendering a cell of `service.rollups.query.read_rendered` (columns
    meter_id, window, g0, g1, ..., sum, count, last, avg, max, distinct_count, numbers already
    text) as the JSON of a `UsageRow`, so that a 300,000-row answer is built by PostgreSQL
    rather than row by row in Python. `edges` are the window edges as JSON strings (as msgspec
    encodes them), `keys` the group_by keys, `aggregations` each meter's. Every literal piece
    is a parameter (`add` adds one and returns its placeholder); group values are escaped by
    to_json. Equal to the Python rendering (tests/usage/test_rows_rendered_in_db.py)."""

    def quoted(column: str) -> str:
        return f"coalesce('\"' || {column} || '\"', 'null')"

    def ids(aggregation: str) -> str:
        return add([meter for meter, kind in aggregations.items() if kind == aggregation])

    value = (
        f"CASE WHEN meter_id = ANY({ids('sum')}::int[]) THEN {quoted('sum')} "
        f"WHEN meter_id = ANY({ids('count')}::int[]) THEN {quoted('count::text')} "
        f"WHEN meter_id = ANY({ids('max')}::int[]) THEN {quoted('max')} "
        f"WHEN meter_id = ANY({ids('unique_count')}::int[]) THEN {quoted('distinct_count::text')} "
        f"ELSE {quoted('last')} END"
    )
    # One format() call per row: the JSON skeleton is a parameter with a %s per value (a key
    # name's own % doubled), cheaper than concatenating twenty pieces.
    window_edges = f"{add(list(edges))}::text[]"
    group = ",".join(msgspec.json.encode(key).decode().replace("%", "%%") + ":%s" for key in keys)
    skeleton = (
        '{"window_start":%s,"window_end":%s,"group":{' + group + '},"value":%s,"sum":"%s",'
        '"count":%s,"last":%s,"avg":"%s"}'
    )
    values = [
        f'({window_edges})["window" + 1]',
        f'({window_edges})["window" + 2]',
        *(f"coalesce(to_json(g{position})::text, 'null')" for position in range(len(keys))),
        value,
        "sum",
        "count",
        quoted("last"),
        "avg",
    ]
    return f"format({add(skeleton)}::text, {', '.join(values)})"
