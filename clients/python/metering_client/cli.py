"""`metering report usage|costs|llm`: the API's reports as tables for people (or CSV, JSON),
against the service at METERING_URL with the key METERING_API_KEY."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TextIO

import msgspec

from metering_client.client import Client
from metering_client.errors import MeteringError
from metering_client.results import Costs, LlmReport, Usage, UsageByMeter

LLM_COLUMNS = (
    "requests",
    "success",
    "errors",
    "canceled",
    "input_tokens",
    "output_tokens",
    "cache_write_tokens",
    "cache_read_tokens",
    "cache_hit_rate",
    "avg_latency_ms",
    "avg_ttft_ms",
    "cost",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metering",
        description="Reports of the metering service at $METERING_URL (key: $METERING_API_KEY).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="usage, costs or LLM report of a tenant")
    kinds = report.add_subparsers(dest="kind", required=True)
    for kind, what in (
        ("usage", "usage by meter, window and group"),
        ("costs", "rated cost by window and group"),
        ("llm", "LLM requests, tokens, cache hit rate, latency and cost"),
    ):
        sub = kinds.add_parser(kind, help=what)
        sub.add_argument("--tenant", required=True)
        sub.add_argument("--period", help="today, 7d, this_month, 2026-11, … (or --from/--to)")
        sub.add_argument("--from", dest="start", help="RFC 3339 start (with --to)")
        sub.add_argument("--to", dest="end", help="RFC 3339 end, exclusive")
        sub.add_argument("--group-by", action="append", default=[], metavar="KEY")
        sub.add_argument("--filter", action="append", default=[], metavar="KEY:VALUE")
        sub.add_argument("--window", choices=("hour", "day", "month"))
        sub.add_argument("--timezone")
        sub.add_argument("--format", choices=("table", "csv", "json"), default="table")
        if kind != "llm":
            sub.add_argument("--meter")
    return parser


def _filters(given: Sequence[str]) -> dict[str, str]:
    filters: dict[str, str] = {}
    for item in given:
        key, sep, value = item.partition(":")
        if not sep:
            raise SystemExit(f"--filter takes KEY:VALUE, got {item!r}")
        filters[key] = value
    return filters


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _rows(result: Any, group_by: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    groups = list(group_by)
    if isinstance(result, Usage):
        header = ["window_start", "window_end", *groups, "value"]
        return header, [
            [_text(row.window_start), _text(row.window_end)]
            + [_text(row.group.get(key)) for key in groups]
            + [_text(row.value)]
            for row in result.rows
        ]
    if isinstance(result, UsageByMeter):
        header = ["meter", "window_start", "window_end", *groups, "value"]
        return header, [
            [meter.meter, _text(row.window_start), _text(row.window_end)]
            + [_text(row.group.get(key)) for key in groups]
            + [_text(row.value)]
            for meter in result.meters
            for row in meter.rows
        ]
    if isinstance(result, Costs):
        header = ["window_start", "window_end", *groups, f"cost ({result.currency})"]
        rows = [
            [_text(row.window_start), _text(row.window_end)]
            + [_text(row.group.get(key)) for key in groups]
            + [_text(row.cost)]
            for row in result.rows
        ]
        rows.append(["total", "", *["" for _ in groups], _text(result.total)])
        return header, rows
    assert isinstance(result, LlmReport)
    header = ["window_start", "window_end", *groups, *LLM_COLUMNS]
    return header, [
        [_text(row.window_start), _text(row.window_end)]
        + [_text(row.group.get(key)) for key in groups]
        + [_text(getattr(row, column)) for column in LLM_COLUMNS]
        for row in result.rows
    ]


def _print_table(header: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    numeric = [
        all(not cell or cell.replace(".", "", 1).lstrip("-").isdigit() for cell in column[1:])
        for column in zip(header, *rows, strict=True)
    ]

    def line(cells: list[str]) -> str:
        parts = (
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        )
        return "  ".join(parts).rstrip()

    out.write(line(header) + "\n")
    out.write("  ".join("-" * width for width in widths) + "\n")
    for row in rows:
        out.write(line(row) + "\n")
    if not rows:
        out.write("(no usage)\n")


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = _parser().parse_args(argv)
    url, key = os.environ.get("METERING_URL"), os.environ.get("METERING_API_KEY")
    if not url or not key:
        print("set METERING_URL and METERING_API_KEY", file=sys.stderr)
        return 2
    query: dict[str, Any] = {
        "tenant_id": args.tenant,
        "start": args.start,
        "end": args.end,
        "period": args.period,
        "window_size": args.window,
        "timezone": args.timezone,
        "group_by": args.group_by,
        "filters": _filters(args.filter) or None,
    }
    result: Any
    with Client(url, key) as client:
        try:
            if args.kind == "usage":
                if args.meter:
                    result = client.usage(args.meter, **query)
                else:
                    result = client.usage_by_meter(**query)
            elif args.kind == "costs":
                result = client.costs(meter=args.meter, **query)
            else:
                result = client.llm_report(**query)
        except MeteringError as error:
            print(f"error: {error}", file=sys.stderr)
            for field in error.errors:
                print(f"  {field.field}: {field.message}", file=sys.stderr)
            return 1
    if args.format == "json":
        out.write(msgspec.json.encode(result).decode() + "\n")
        return 0
    header, rows = _rows(result, args.group_by)
    if args.format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    else:
        _print_table(header, rows, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
