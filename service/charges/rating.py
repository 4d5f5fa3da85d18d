"""Recurring charges on invoices, as pure functions: which charges a period bills, prorated
by the share of the period's seconds they were effective in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from service.common.money import MONEY_CONTEXT, render_amount, round_money, to_plain_string
from service.invoices.rating import InvoiceLine

# Proration is shown with this many decimal places; the amount uses the exact fraction.
PRORATION_PLACES = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeRule:
    id: str
    name: str
    unit_amount: Decimal
    quantity: Decimal
    currency: str
    effective_from: datetime  # tz-aware, inclusive
    effective_to: datetime | None  # tz-aware, exclusive; None = open-ended
    prorate: bool = True


def charge_line(
    charge: ChargeRule, period_start: datetime, period_end: datetime
) -> InvoiceLine | None:
    """The charge's line on the invoice of `[period_start, period_end)`, or None when it is not
    effective in it.

    Prorated: quantity x unit_amount x (seconds effective in the period / seconds of the
    period), exact, rounded once, half-up, to the currency's minor units. The period's bounds
    are local midnights of the tenant's zone as UTC instants, so a month with a DST change has
    its true length (October in Berlin: 745 hours). Not prorated: the full amount for any
    month the charge is effective in at all. The line covers the part of the period the charge
    was effective in and shows `proration` rounded to 10 places.
    """
    if not period_start < period_end:
        raise ValueError("period_start must be before period_end")
    start = max(period_start, charge.effective_from)
    end = period_end if charge.effective_to is None else min(period_end, charge.effective_to)
    if start >= end:
        return None
    with localcontext(MONEY_CONTEXT):
        if charge.prorate:
            effective = Decimal((end - start).total_seconds())
            length = Decimal((period_end - period_start).total_seconds())
            fraction = effective / length
        else:
            effective = length = fraction = Decimal(1)
        amount = charge.quantity * charge.unit_amount * effective / length
        shown = fraction.quantize(Decimal(1).scaleb(-PRORATION_PLACES)).normalize()
    description = charge.name
    if charge.quantity != 1:
        quantity = to_plain_string(charge.quantity.normalize(MONEY_CONTEXT))
        description += f" — {quantity} at {render_amount(charge.unit_amount, charge.currency)}"
    return InvoiceLine(
        kind="charge",
        meter=None,
        description=description,
        match={},
        price_id=None,
        charge_id=charge.id,
        period_start=start,
        period_end=end,
        quantity=charge.quantity,
        unit_amount=charge.unit_amount,
        per_units=Decimal(1),
        amount=round_money(amount, charge.currency),
        tier=None,
        unpriced=False,
        proration=shown,
    )
