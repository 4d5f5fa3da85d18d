"""Reports for people and for programs: the same tables as rich text, CSV or JSON.

A report is a list of `ReportTable`s: named columns of a known kind and rows of the values
the API answers (decimal strings, integers, times, None). How a kind is shown is decided here
once, for every report (`report usage` today; costs and the LLM report reuse it):

- `table`: rich tables, numbers right-aligned, quantities readable (1.2M), money with its
  currency, a total row per table summing the columns that add up;
- `csv`: one header and every row of every table, values exactly as the API gives them (no
  rounding, no total rows: a program sums what it needs); rows carry what tells their table
  apart (the usage report's `meter` column);
- `json`: the API answer itself, so a script gets what the endpoint would give it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from typing import IO, Any

import msgspec
from rich.console import Console
from rich.table import Table

from service.common.money import is_currency, round_money, to_plain_string


class Kind(StrEnum):
    TEXT = "text"
    TIME = "time"  # a window's start or end
    COUNT = "count"  # an integer number of events or requests
    QUANTITY = "quantity"  # a decimal quantity (tokens, calls, ms)
    MONEY = "money"  # a decimal amount in the table's currency
    RATIO = "ratio"  # a decimal fraction (0.25 → 25.0%)


class Format(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Column:
    key: str  # the row's key, and the CSV header
    header: str  # what the table shows
    kind: Kind = Kind.TEXT
    total: bool = False  # the total row sums this column


@dataclass(slots=True)
class ReportTable:
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    currency: str | None = None  # of MONEY columns
    # Times are shown in this layout (a day window needs no hours).
    time_format: str = "%Y-%m-%d %H:%M"
    note: str | None = None  # shown under the table (e.g. "truncated: more rows existed")
    # The CSV's columns: every field of a row, shown or not (default: the shown columns).
    csv_columns: list[str] | None = None


_THOUSAND = Decimal(1000)
_SCALES = (
    (Decimal(10) ** 12, "T"),
    (Decimal(10) ** 9, "B"),
    (Decimal(10) ** 6, "M"),
    (_THOUSAND, "k"),
)
_CENT = Decimal("0.01")
_TENTH = Decimal("0.1")
MISSING = "—"


def readable(value: Decimal) -> str:
    """A quantity as people read it: 1.2M, 45.0k, 987, 0.5; exact below a thousand."""
    size = abs(value)
    for index, (scale, suffix) in enumerate(_SCALES):
        if size >= scale:
            shown = (value / scale).quantize(_TENTH, rounding=ROUND_HALF_UP)
            if abs(shown) >= _THOUSAND and index > 0:  # 999,999 is 1.0M, not 1000.0k
                bigger, bigger_suffix = _SCALES[index - 1]
                shown, suffix = (value / bigger).quantize(_TENTH, ROUND_HALF_UP), bigger_suffix
            return f"{shown}{suffix}"
    if value == value.to_integral_value():
        return f"{value:.0f}"
    return to_plain_string(value.normalize())


def show(value: Any, column: Column, table: ReportTable) -> str:
    """A value as the table shows it."""
    if value is None:
        return MISSING
    if column.kind is Kind.TIME:
        return value.strftime(table.time_format) if isinstance(value, datetime) else str(value)
    number = _decimal(value)
    if number is None:
        return str(value)
    if column.kind is Kind.COUNT:
        return f"{number:,.0f}"
    if column.kind is Kind.QUANTITY:
        return readable(number)
    if column.kind is Kind.MONEY:
        # Shown to the currency's minor units, half-up as on invoices (exact in CSV and JSON).
        if table.currency and is_currency(table.currency):
            return f"{round_money(number, table.currency):,f} {table.currency}"
        return f"{number.quantize(_CENT, rounding=ROUND_HALF_UP):,f}"
    if column.kind is Kind.RATIO:
        return f"{(number * 100).quantize(_TENTH, rounding=ROUND_HALF_UP)}%"
    return str(value)


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def totals(table: ReportTable) -> dict[str, Decimal]:
    """The sums of the columns marked `total`, over every row (missing values count 0)."""
    sums: dict[str, Decimal] = {}
    for column in table.columns:
        if column.total:
            sums[column.key] = sum(
                (_decimal(row.get(column.key)) or Decimal(0) for row in table.rows), Decimal(0)
            )
    return sums


_NUMERIC = frozenset({Kind.COUNT, Kind.QUANTITY, Kind.MONEY, Kind.RATIO})


def render_tables(tables: Sequence[ReportTable], console: Console, heading: str | None) -> None:
    """Print each table with rich: numbers right-aligned, a total row when rows add up."""
    if heading:
        console.print(heading, highlight=False)
    for table in tables:
        shown = Table(title=table.title, title_justify="left", show_footer=False)
        sums = totals(table) if table.rows else {}
        # The total row is labelled in the first column; when that column is itself summed (a
        # report without group or window columns), a narrow column of its own holds the label.
        label = [""] if sums and table.columns[0].key in sums else []
        if label:
            shown.add_column("", no_wrap=True)
        for column in table.columns:
            numeric = column.kind in _NUMERIC
            shown.add_column(column.header, justify="right" if numeric else "left", no_wrap=True)
        for row in table.rows:
            shown.add_row(*label, *(show(row.get(c.key), c, table) for c in table.columns))
        if sums:
            cells = [show(sums[c.key], c, table) if c.key in sums else "" for c in table.columns]
            cells = [*label, *cells]
            cells[0] = cells[0] or "Total"
            shown.add_section()
            shown.add_row(*cells, style="bold")
        if not table.rows:
            shown.add_row(*["" for _ in table.columns])
            shown.caption = "no usage in this range"
        elif table.note:
            shown.caption = table.note
        console.print(shown)


def csv_columns(tables: Iterable[ReportTable]) -> list[str]:
    """Every column key of every table, in first-seen order."""
    keys: list[str] = []
    for table in tables:
        for key in table.csv_columns or [column.key for column in table.columns]:
            if key not in keys:
                keys.append(key)
    return keys


def write_csv(tables: Sequence[ReportTable], stream: IO[str]) -> None:
    """One header, then every row of every table; values as the API gives them, times in
    RFC 3339 with their offset, None as an empty cell."""
    keys = csv_columns(tables)
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(keys)
    for table in tables:
        for row in table.rows:
            writer.writerow([_csv_cell(row.get(key)) for key in keys])


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return to_plain_string(value)
    return str(value)


def print_report(
    answer: Any,
    tables: Sequence[ReportTable],
    heading: str | None,
    output: Format,
    stream: IO[str],
) -> None:
    """Write a report to `stream` in `output`: `answer` (the API's answer struct) for JSON,
    the tables for the others."""
    if output is Format.JSON:
        stream.write(msgspec.json.format(msgspec.json.encode(answer), indent=2).decode() + "\n")
    elif output is Format.CSV:
        write_csv(tables, stream)
    else:
        render_tables(tables, report_console(stream), heading)


def report_console(stream: IO[str]) -> Console:
    """A console on `stream`: on a terminal its width and colours; elsewhere (a pipe, a file)
    plain text wide enough that tables are not squeezed to 80 columns."""
    terminal = stream.isatty()
    return Console(file=stream, width=None if terminal else 200, highlight=False)
