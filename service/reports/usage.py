"""`report usage`: a usage answer (GET /v1/usage without `meter`, or with one) as report
tables, one per meter: its windows and groups, the meter's value and the event count."""

from __future__ import annotations

from typing import Any

from service.reports.render import Column, Kind, ReportTable
from service.usage.schemas import MetersUsageOut, MeterUsage, UsageOut, UsageRow

_TIME_FORMATS = {"hour": "%Y-%m-%d %H:%M", "day": "%Y-%m-%d", "month": "%Y-%m"}


def usage_heading(answer: MetersUsageOut | UsageOut) -> str:
    return (
        f"Usage of {answer.tenant_id} from {answer.start.isoformat()} to "
        f"{answer.end.isoformat()} ({answer.timezone})"
    )


def usage_tables(answer: MetersUsageOut | UsageOut) -> list[ReportTable]:
    """One table per meter; CSV rows carry every field of the API's rows, plus the meter."""
    blocks = (
        answer.meters
        if isinstance(answer, MetersUsageOut)
        else [
            MeterUsage(
                meter=answer.meter,
                aggregation=answer.aggregation,
                unit=answer.unit,
                rows=answer.rows,
                truncated=answer.truncated,
            )
        ]
    )
    if answer.window_size is None and not answer.group_by:
        return [_totals_table(blocks)]
    return [_table(block, answer.window_size, answer.group_by) for block in blocks]


def _totals_table(blocks: list[MeterUsage]) -> ReportTable:
    """Without windows or groups each meter has one row: one table, a line per meter (no
    total row: the meters' units do not add up, and one call may count in several)."""
    rows = [_row(block, row, []) for block in blocks for row in block.rows]
    return ReportTable(
        title="Totals per meter",
        columns=[
            Column("meter", "meter"),
            Column("aggregation", "aggregation"),
            Column("unit", "unit"),
            Column("value", "value", Kind.QUANTITY),
            Column("count", "events", Kind.COUNT),
        ],
        rows=rows,
        csv_columns=_csv_columns([]),
    )


def _row(block: MeterUsage, row: UsageRow, group_by: list[str]) -> dict[str, Any]:
    return {
        "meter": block.meter,
        "aggregation": block.aggregation,
        "unit": block.unit,
        "window_start": row.window_start,
        "window_end": row.window_end,
        **{group_column(key): row.group.get(key) for key in group_by},
        "value": row.value,
        "sum": row.sum,
        "count": row.count,
        "last": row.last,
        "avg": row.avg,
    }


def _csv_columns(group_by: list[str]) -> list[str]:
    """Every field of the API's rows, with the meter's and each group key."""
    fields = ["value", "sum", "count", "last", "avg"]
    groups = [group_column(key) for key in group_by]
    return ["meter", "aggregation", "unit", "window_start", "window_end", *groups, *fields]


_ROW_FIELDS = frozenset(_csv_columns([]))


def group_column(key: str) -> str:
    """A group key's column: the key itself, or `group.KEY` for a dimension named like a
    field of the row (`value`, `unit`, ...)."""
    return f"group.{key}" if key in _ROW_FIELDS else key


def _table(block: MeterUsage, window_size: str | None, group_by: list[str]) -> ReportTable:
    # `last` values do not add up across windows or groups; sums and counts do.
    adds_up = block.aggregation != "last"
    columns = []
    if window_size is not None:
        columns.append(Column("window_start", window_size, Kind.TIME))
    columns += [Column(group_column(key), key) for key in group_by]
    value = f"{block.aggregation} ({block.unit})" if block.unit else block.aggregation
    kind = Kind.COUNT if block.aggregation == "count" else Kind.QUANTITY
    columns.append(Column("value", value, kind, total=adds_up))
    if block.aggregation != "count":
        columns.append(Column("count", "events", Kind.COUNT, total=True))
    rows = [_row(block, row, group_by) for row in block.rows]
    return ReportTable(
        title=block.meter,
        columns=columns,
        rows=rows,
        time_format=_TIME_FORMATS.get(window_size or "", "%Y-%m-%d %H:%M"),
        note="truncated: --limit left rows out" if block.truncated else None,
        csv_columns=_csv_columns(group_by),
    )
