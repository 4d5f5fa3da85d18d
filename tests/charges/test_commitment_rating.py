"""Commitments (a monthly minimum spend) on an invoice: worked by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from service.charges.rating import CommitmentRule, commitment_line
from service.invoices.rating import InvoiceLine
from tests.charges.test_charge_rating import OCT_END, OCT_START, SEAT_CHANGE

D = Decimal


def commitment(**fields: Any) -> CommitmentRule:
    values: dict[str, Any] = {
        "id": "k",
        "amount": D("500.00"),
        "currency": "USD",
        "effective_from": datetime(2026, 1, 1, tzinfo=UTC),
        "effective_to": None,
    }
    values.update(fields)
    return CommitmentRule(**values)


LINE = InvoiceLine(
    meter="tokens",
    description="Tokens",
    match={},
    price_id="p",
    period_start=OCT_START,
    period_end=OCT_END,
    quantity=D(60),
    unit_amount=D(2),
    per_units=D(1),
    amount=D("120.00"),
    tier=None,
    unpriced=False,
)


def spend(*kinds_and_amounts: tuple[str, str]) -> list[InvoiceLine]:
    return [replace(LINE, kind=kind, amount=D(amount)) for kind, amount in kinds_and_amounts]  # type: ignore[arg-type]


def true_up(commitments: list[CommitmentRule], lines: list[InvoiceLine]) -> InvoiceLine | None:
    return commitment_line(
        commitments, lines, currency="USD", period_start=OCT_START, period_end=OCT_END
    )


def test_the_true_up_brings_the_months_spend_to_the_commitment() -> None:
    lines = spend(("usage", "120.00"), ("minimum", "10.00"), ("charge", "200.00"))
    # adjustments bill earlier months: they do not count towards this month's commitment
    lines += spend(("adjustment", "1000.00"))
    line = true_up([commitment()], lines)
    assert line is not None
    assert (line.kind, line.meter, line.commitment_id) == ("commitment", None, "k")
    # 500.00 - (120.00 + 10.00 + 200.00)
    assert (line.amount, line.unit_amount, line.quantity) == (D("170.00"), D("170.00"), D(1))
    assert (line.minimum_amount, line.proration) == (D("500.00"), D(1))
    assert line.description == "Commitment: minimum spend of 500.00"


def test_enough_spend_needs_no_true_up_and_no_spend_owes_it_all() -> None:
    assert true_up([commitment()], spend(("usage", "500.00"))) is None
    line = true_up([commitment()], [])
    assert line is not None and line.amount == D("500.00")


def test_a_commitment_starting_mid_month_is_prorated_by_seconds() -> None:
    # 745.00 a month from October 16 (Berlin): 385 of the month's 745 hours: 385.00
    line = true_up(
        [commitment(amount=D("745.00"), effective_from=SEAT_CHANGE)], spend(("usage", "85.00"))
    )
    assert line is not None
    assert (line.minimum_amount, line.amount) == (D("385.00"), D("300.00"))
    assert (line.period_start, line.period_end) == (SEAT_CHANGE, OCT_END)
    assert str(line.proration) == "0.5167785235"


def test_a_commitment_raised_mid_month_owes_each_part() -> None:
    before = commitment(amount=D("745.00"), effective_to=SEAT_CHANGE)  # 360 hours: 360.00
    after = commitment(id="k2", amount=D("1490.00"), effective_from=SEAT_CHANGE)  # 770.00
    line = true_up([before, after], [])
    assert line is not None
    assert (line.minimum_amount, line.amount, line.proration) == (D("1130.00"), D("1130.00"), D(1))
    assert line.commitment_id == "k2"


def test_other_currencies_and_other_months_owe_nothing_here() -> None:
    assert true_up([commitment(currency="EUR")], []) is None
    assert true_up([commitment(effective_to=OCT_START)], []) is None
