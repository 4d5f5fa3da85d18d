"""The report renderer on its own: readable quantities, money with its currency, totals,
right-aligned numbers, CSV exactly as given."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from service.reports.render import (
    Column,
    Format,
    Kind,
    ReportTable,
    print_report,
    readable,
    report_console,
    totals,
)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0", "0"),
        ("0.5", "0.5"),
        ("12.50", "12.5"),
        ("987", "987"),
        ("1000", "1.0k"),
        ("45000", "45.0k"),
        ("1200000", "1.2M"),
        ("1249999", "1.2M"),
        ("3400000000", "3.4B"),
        ("5000000000000", "5.0T"),
        ("-2500", "-2.5k"),
        ("999999", "1.0M"),
        ("999949", "999.9k"),
        ("1049", "1.0k"),
    ],
)
def test_readable_quantities(value: str, shown: str) -> None:
    assert readable(Decimal(value)) == shown


def costs_like() -> ReportTable:
    """A table shaped like the costs report will be: money in a currency, a ratio."""
    return ReportTable(
        title="cost by model",
        columns=[
            Column("model", "model"),
            Column("input_tokens", "input", Kind.QUANTITY, total=True),
            Column("requests", "requests", Kind.COUNT, total=True),
            Column("cache_hit_rate", "cache hits", Kind.RATIO),
            Column("cost", "cost", Kind.MONEY, total=True),
        ],
        rows=[
            {"model": "gpt-4o", "input_tokens": "1834000", "requests": 1200,
             "cache_hit_rate": "0.25", "cost": "4.585000000000"},
            {"model": None, "input_tokens": "12", "requests": 3,
             "cache_hit_rate": None, "cost": "1234.5"},
        ],
        currency="USD",
    )  # fmt: skip


def test_totals_sum_the_columns_that_add_up() -> None:
    assert totals(costs_like()) == {
        "input_tokens": Decimal("1834012"),
        "requests": Decimal(1203),
        "cost": Decimal("1239.085000000000"),
    }


def test_table_aligns_numbers_and_shows_money_with_its_currency() -> None:
    out = io.StringIO()
    print_report(None, [costs_like()], "Costs of acme", Format.TABLE, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Costs of acme"
    gpt = next(line for line in lines if "gpt-4o" in line)
    other = next(line for line in lines if "1,234.50 USD" in line)
    total = next(line for line in lines if line.lstrip("│| ").startswith("Total"))
    assert "4.59 USD" in gpt and "25.0%" in gpt and "1.8M" in gpt and "1,200" in gpt
    assert "—" in other  # no model, no cache hit rate
    assert "1,239.09 USD" in total and "1,203" in total
    # Right-aligned: the money column ends at one place on every line.
    ends = {line.index("USD") for line in (gpt, other, total)}
    assert len(ends) == 1
    assert "\x1b[" not in out.getvalue()  # not a terminal: no colour codes


def test_the_total_row_is_labelled_when_every_column_adds_up() -> None:
    # A report without group or window columns: its first column is summed too, so the label
    # gets a column of its own instead of overwriting (or lacking) a figure.
    table = ReportTable(
        title="llm",
        columns=[
            Column("requests", "requests", Kind.COUNT, total=True),
            Column("cost", "cost", Kind.MONEY, total=True),
        ],
        rows=[{"requests": 1200, "cost": "4.5"}, {"requests": 3, "cost": "0.25"}],
        currency="USD",
    )
    out = io.StringIO()
    print_report(None, [table], None, Format.TABLE, out)
    lines = out.getvalue().splitlines()
    total = next(line for line in lines if line.lstrip("│| ").startswith("Total"))
    assert "1,203" in total and "4.75 USD" in total
    first = next(line for line in lines if "1,200" in line)
    assert first.index("USD") == total.index("USD")


def test_csv_is_exact_and_complete() -> None:
    table = costs_like()
    table.csv_columns = ["model", "input_tokens", "requests", "cache_hit_rate", "cost"]
    table.rows[0]["window_start"] = datetime(2026, 3, 1, tzinfo=UTC)
    out = io.StringIO()
    print_report(None, [table], None, Format.CSV, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows == [
        {"model": "gpt-4o", "input_tokens": "1834000", "requests": "1200",
         "cache_hit_rate": "0.25", "cost": "4.585000000000"},
        {"model": "", "input_tokens": "12", "requests": "3", "cache_hit_rate": "",
         "cost": "1234.5"},
    ]  # fmt: skip


def test_json_is_the_answer_given() -> None:
    out = io.StringIO()
    print_report({"rows": [], "total": "0"}, [], None, Format.JSON, out)
    assert out.getvalue() == '{\n  "rows": [],\n  "total": "0"\n}\n'


def test_a_pipe_gets_wide_plain_tables() -> None:
    console = report_console(io.StringIO())
    assert console.width == 200 and not console.is_terminal
