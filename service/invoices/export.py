"""CSV export of an invoice (RFC 4180, CRLF line ends): a header, one row per line, then a
subtotal row and a total row. `row_type` (`line`, `subtotal`, `total`) tells them apart, so
the line amounts can be summed and checked against the subtotal. A tiered line's tiers are one
JSON cell (`tiers`)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import msgspec

from service.invoices.schemas import InvoiceOut

CSV_COLUMNS = (
    "invoice_number",
    "invoice_id",
    "tenant_id",
    "status",
    "period",
    "currency",
    "kind",
    "meter",
    "description",
    "match",
    "period_start",
    "period_end",
    "quantity",
    "unit_amount",
    "per_units",
    "amount",
    "tier",
    "unpriced",
    "adjusts_period",
    "price_id",
    "adjusts_kind",
    "free_units_applied",
    "packages",
    "minimum_amount",
    "charge_id",
    "commitment_id",
    "proration",
    "tiers",
    "row_type",
)
# A spreadsheet would run a cell starting with one of these as a formula; free text from
# usage (an unpriced line's model name, say) must not be able to do that.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def invoice_csv(invoice: InvoiceOut) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for line in invoice.lines:
        match = "; ".join(f"{key}={value}" for key, value in sorted(line.match.items()))
        writer.writerow(
            (
                invoice.number or "",
                invoice.id or "",
                invoice.tenant_id,
                invoice.status,
                invoice.period,
                invoice.currency,
                line.kind,
                line.meter or "",
                _text(line.description),
                _text(match),
                _instant(line.period_start),
                _instant(line.period_end),
                line.quantity,
                line.unit_amount,
                line.per_units,
                line.amount,
                "" if line.tier is None else str(line.tier),
                "true" if line.unpriced else "false",
                line.adjusts_period or "",
                line.price_id or "",
                line.adjusts_kind or "",
                line.free_units_applied or "",
                line.packages or "",
                line.minimum_amount or "",
                line.charge_id or "",
                line.commitment_id or "",
                line.proration or "",
                msgspec.json.encode(line.tiers).decode() if line.tiers else "",
                "line",
            )
        )
    for row_type, amount in (("subtotal", invoice.subtotal), ("total", invoice.total)):
        row = dict.fromkeys(CSV_COLUMNS, "")
        row.update(
            invoice_number=invoice.number or "",
            invoice_id=invoice.id or "",
            tenant_id=invoice.tenant_id,
            status=invoice.status,
            period=invoice.period,
            currency=invoice.currency,
            description=row_type.capitalize(),
            period_start=_instant(invoice.period_start),
            period_end=_instant(invoice.period_end),
            amount=amount,
            row_type=row_type,
        )
        writer.writerow(row.values())
    return buffer.getvalue()


def csv_filename(invoice: InvoiceOut) -> str:
    return f"{invoice.number or invoice.tenant_id + '-' + invoice.period}.csv"
