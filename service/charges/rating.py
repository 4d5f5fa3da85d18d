"""Recurring charges and commitments on invoices, as pure functions: which charges a period
bills, prorated by the share of the period's seconds they were effective in, and the
commitment true-up that brings a period's spend up to its (prorated) minimum."""

from __future__ import annotations

from collections.abc import Sequence
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
    covered = _covered(charge.effective_from, charge.effective_to, period_start, period_end)
    if covered is None:
        return None
    start, end = covered
    with localcontext(MONEY_CONTEXT):
        if charge.prorate:
            effective, length = _seconds(start, end), _seconds(period_start, period_end)
        else:
            effective = length = Decimal(1)
        amount = charge.quantity * charge.unit_amount * effective / length
        shown = _shown(effective / length)
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


def _covered(
    effective_from: datetime,
    effective_to: datetime | None,
    period_start: datetime,
    period_end: datetime,
) -> tuple[datetime, datetime] | None:
    """The part of the period `[effective_from, effective_to)` covers, or None."""
    start = max(period_start, effective_from)
    end = period_end if effective_to is None else min(period_end, effective_to)
    return (start, end) if start < end else None


def _seconds(start: datetime, end: datetime) -> Decimal:
    return Decimal((end - start).total_seconds())


def _shown(fraction: Decimal) -> Decimal:
    return fraction.quantize(Decimal(1).scaleb(-PRORATION_PLACES)).normalize()


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitmentRule:
    id: str
    amount: Decimal  # per month
    currency: str
    effective_from: datetime
    effective_to: datetime | None


# The lines a commitment counts: the period's own spend, not corrections of earlier periods.
COMMITTED_KINDS = frozenset({"usage", "minimum", "charge"})


def commitment_line(
    commitments: Sequence[CommitmentRule],
    lines: Sequence[InvoiceLine],
    *,
    currency: str,
    period_start: datetime,
    period_end: datetime,
) -> InvoiceLine | None:
    """The true-up of `currency`'s commitments for `[period_start, period_end)`, or None.

    The period owes the sum of its commitments in `currency`, each prorated by the share of
    the period's seconds it was effective in (exact, then rounded once); when the rounded
    amounts of the period's usage, minimum and charge lines in `currency` add up to less, a
    `commitment` line bills the difference. A period without spend owes the whole commitment
    (a commitment is what a tenant pays regardless).
    """
    mine = [c for c in commitments if c.currency == currency]
    owed = Decimal(0)
    covered_start: datetime | None = None
    covered_end: datetime | None = None
    share = Decimal(0)
    ids: list[str] = []
    with localcontext(MONEY_CONTEXT):
        length = _seconds(period_start, period_end)
        for commitment in mine:
            covered = _covered(
                commitment.effective_from, commitment.effective_to, period_start, period_end
            )
            if covered is None:
                continue
            fraction = _seconds(*covered) / length
            owed += commitment.amount * _seconds(*covered) / length
            share += fraction
            ids.append(commitment.id)
            covered_start = covered[0] if covered_start is None else min(covered_start, covered[0])
            covered_end = covered[1] if covered_end is None else max(covered_end, covered[1])
        if not ids or covered_start is None or covered_end is None:
            return None
        owed = round_money(owed, currency)
        spent = sum((line.amount for line in lines if line.kind in COMMITTED_KINDS), Decimal(0))
        if spent >= owed:
            return None
        top_up = owed - spent
    return InvoiceLine(
        kind="commitment",
        meter=None,
        description=f"Commitment: minimum spend of {render_amount(owed, currency)}",
        match={},
        price_id=None,
        # One line per currency and period: it names the period's latest commitment.
        commitment_id=ids[-1],
        period_start=covered_start,
        period_end=covered_end,
        quantity=Decimal(1),
        unit_amount=top_up,
        per_units=Decimal(1),
        amount=top_up,
        tier=None,
        unpriced=False,
        minimum_amount=owed,
        proration=_shown(share),
    )
