"""Errors of the invoices API: one type per meaning, each with a stable code."""

from __future__ import annotations

from service.common.errors import Conflict, InvalidInput


class PeriodNotEnded(InvalidInput):
    code, title = "period_not_ended", "Period has not ended"


class InvoiceExists(Conflict):
    code, title = "invoice_exists", "Period already finalized"


class PeriodAdjustedLater(Conflict):
    code, title = "period_adjusted_later", "Period already adjusted on a later invoice"


class InvoiceAlreadyVoid(Conflict):
    code, title = "invoice_already_void", "Invoice already void"


class AmbiguousPrices(Conflict):
    code, title = "ambiguous_prices", "Prices tie for the same usage"


class PeriodOverlaps(Conflict):
    code, title = "period_overlaps", "Period overlaps a finalized invoice"
