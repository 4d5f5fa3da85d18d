"""`report costs` and `report llm`: the answers of GET /v1/costs and GET /v1/reports/llm as
report tables (service.reports.render shows them as tables, CSV or JSON)."""

from __future__ import annotations

from typing import Any

from service.costs.schemas import CostsOut
from service.reports.render import Column, Kind, ReportTable
from service.reports.schemas import LlmReportOut
from service.reports.usage import group_column

_TIME_FORMATS = {"hour": "%Y-%m-%d %H:%M", "day": "%Y-%m-%d", "month": "%Y-%m"}


def _heading(what: str, answer: CostsOut | LlmReportOut) -> str:
    return (
        f"{what} of {answer.tenant_id} from {answer.start.isoformat()} to "
        f"{answer.end.isoformat()} ({answer.timezone}), in {answer.currency}"
    )


def _leading_columns(window_size: str | None, group_by: list[str]) -> list[Column]:
    columns = []
    if window_size is not None:
        columns.append(Column("window_start", window_size, Kind.TIME))
    return columns + [Column(group_column(key), key) for key in group_by]


def costs_heading(answer: CostsOut) -> str:
    return _heading("Costs", answer)


def costs_tables(answer: CostsOut) -> list[ReportTable]:
    """One table: a row per window and group with its cost, and a column per meter (its
    cost); CSV rows carry each meter's quantity and cost too. Unpriced usage, when any, is a
    second table (in the CSV: rows with `unpriced_meter` and `unpriced_quantity`)."""
    meters = sorted({m.meter for row in answer.rows for m in row.meters})
    rows: list[dict[str, Any]] = []
    for row in answer.rows:
        line: dict[str, Any] = {
            "window_start": row.window_start,
            "window_end": row.window_end,
            **{group_column(key): row.group.get(key) for key in answer.group_by},
            "cost": row.cost,
        }
        for meter in row.meters:
            line[f"{meter.meter}.quantity"] = meter.quantity
            line[f"{meter.meter}.cost"] = meter.cost
        rows.append(line)
    columns = [
        *_leading_columns(answer.window_size, answer.group_by),
        *(Column(f"{meter}.cost", meter, Kind.MONEY, total=True) for meter in meters),
        Column("cost", "cost", Kind.MONEY, total=True),
    ]
    groups = [group_column(key) for key in answer.group_by]
    per_meter = [f"{meter}.{part}" for meter in meters for part in ("quantity", "cost")]
    tables = [
        ReportTable(
            title="Cost per group" if answer.group_by else "Cost",
            columns=columns,
            rows=rows,
            currency=answer.currency,
            time_format=_TIME_FORMATS.get(answer.window_size or "", "%Y-%m-%d %H:%M"),
            note=(
                f"truncated: --limit left rows out; the total of every row is {answer.total}"
                if answer.truncated
                else None
            ),
            csv_columns=["window_start", "window_end", *groups, "cost", *per_meter],
        )
    ]
    if answer.unpriced:
        tables.append(
            ReportTable(
                title="Unpriced usage (no price covers it: not in the costs above)",
                # Named apart in the CSV, where these rows follow the cost rows.
                columns=[
                    Column("unpriced_meter", "meter"),
                    Column("unpriced_quantity", "quantity", Kind.QUANTITY),
                ],
                rows=[
                    {"unpriced_meter": u.meter, "unpriced_quantity": u.quantity}
                    for u in answer.unpriced
                ],
            )
        )
    return tables


# Every figure of a report row, in the API's order (the CSV's columns after the group).
_LLM_FIELDS = (
    "requests", "success", "errors", "canceled", "input_tokens", "output_tokens",
    "cache_write_tokens", "cache_read_tokens", "cache_hit_rate", "avg_latency_ms",
    "avg_ttft_ms", "cost",
)  # fmt: skip


def llm_heading(answer: LlmReportOut) -> str:
    return _heading("LLM calls", answer)


def llm_tables(answer: LlmReportOut) -> list[ReportTable]:
    """One table, a row per window and group: requests by status, tokens, cache hit rate,
    average latencies and cost (the averages and the rate do not add up: no total)."""
    rows = [
        {
            "window_start": row.window_start,
            "window_end": row.window_end,
            **{group_column(key): row.group.get(key) for key in answer.group_by},
            **{name: getattr(row, name) for name in _LLM_FIELDS},
        }
        for row in answer.rows
    ]
    columns = [
        *_leading_columns(answer.window_size, answer.group_by),
        Column("requests", "requests", Kind.COUNT, total=True),
        Column("errors", "errors", Kind.COUNT, total=True),
        Column("input_tokens", "input", Kind.QUANTITY, total=True),
        Column("output_tokens", "output", Kind.QUANTITY, total=True),
        Column("cache_write_tokens", "cache write", Kind.QUANTITY, total=True),
        Column("cache_read_tokens", "cache read", Kind.QUANTITY, total=True),
        Column("cache_hit_rate", "cache hits", Kind.RATIO),
        Column("avg_latency_ms", "latency ms", Kind.QUANTITY),
        Column("avg_ttft_ms", "TTFT ms", Kind.QUANTITY),
        Column("cost", "cost", Kind.MONEY, total=True),
    ]
    groups = [group_column(key) for key in answer.group_by]
    return [
        ReportTable(
            title="LLM calls",
            columns=columns,
            rows=rows,
            currency=answer.currency,
            time_format=_TIME_FORMATS.get(answer.window_size or "", "%Y-%m-%d %H:%M"),
            csv_columns=["window_start", "window_end", *groups, *_LLM_FIELDS],
        )
    ]
