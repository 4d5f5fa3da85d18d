"""Recurring charges on a month's invoice, prorated by seconds in the tenant's zone: worked by
hand over a DST month in Europe/Berlin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from service.charges.rating import ChargeRule, charge_line
from service.invoices.service import invoice_period

BERLIN = "Europe/Berlin"
# October 2026 in Berlin: summer time ends on the 25th, so the month lasts 745 hours.
OCT_START, OCT_END = invoice_period("2026-10", BERLIN)
SEAT_CHANGE = datetime(2026, 10, 16, tzinfo=ZoneInfo(BERLIN)).astimezone(UTC)  # 22:00Z on the 15th


def charge(**fields: Any) -> ChargeRule:
    values: dict[str, Any] = {
        "id": "c",
        "name": "Seats",
        "unit_amount": Decimal("40.00"),
        "quantity": Decimal(25),
        "currency": "USD",
        "effective_from": datetime(2026, 1, 1, tzinfo=UTC),
        "effective_to": None,
    }
    values.update(fields)
    return ChargeRule(**values)


def test_october_in_berlin_has_745_hours() -> None:
    bounds = (OCT_START, OCT_END)
    assert bounds == (datetime(2026, 9, 30, 22, tzinfo=UTC), datetime(2026, 10, 31, 23, tzinfo=UTC))
    assert (OCT_END - OCT_START).total_seconds() == 745 * 3600


def test_a_whole_month_bills_in_full() -> None:
    line = charge_line(charge(), OCT_START, OCT_END)
    assert line is not None
    assert (line.kind, line.meter, line.charge_id, line.amount, line.proration) == (
        "charge",
        None,
        "c",
        Decimal("1000.00"),
        Decimal(1),
    )
    assert line.description == "Seats — 25 at 40.00"
    assert (line.period_start, line.period_end) == (OCT_START, OCT_END)


def test_a_seat_change_mid_month_is_prorated_by_seconds() -> None:
    before = charge(effective_to=SEAT_CHANGE)
    after = charge(id="d", quantity=Decimal(30), effective_from=SEAT_CHANGE)
    first, second = charge_line(before, OCT_START, OCT_END), charge_line(after, OCT_START, OCT_END)
    assert first is not None and second is not None
    # 25 seats for 360 of 745 hours: 1000.00 x 360 / 745 = 483.2214... -> 483.22
    assert (first.amount, str(first.proration)) == (Decimal("483.22"), "0.4832214765")
    # 30 seats for the other 385 hours (the 25-hour day included): 620.1342... -> 620.13
    assert (second.amount, str(second.proration)) == (Decimal("620.13"), "0.5167785235")
    assert (first.period_end, second.period_start) == (SEAT_CHANGE, SEAT_CHANGE)
    # A 744-hour month would have billed 483.87 and 619.35: the DST hour counts.


def test_not_prorated_bills_any_month_it_touches_in_full() -> None:
    fee = charge(
        name="Platform fee",
        unit_amount=Decimal("99.00"),
        quantity=Decimal(1),
        prorate=False,
        effective_from=datetime(2026, 10, 20, tzinfo=UTC),
    )
    line = charge_line(fee, OCT_START, OCT_END)
    assert line is not None
    assert (line.amount, line.proration, line.description) == (
        Decimal("99.00"),
        Decimal(1),
        "Platform fee",
    )


def test_months_outside_the_charge_bill_nothing() -> None:
    ended = charge(effective_to=OCT_START)
    assert charge_line(ended, OCT_START, OCT_END) is None
    later = charge(effective_from=OCT_END)
    assert charge_line(later, OCT_START, OCT_END) is None


def test_march_has_743_hours() -> None:
    start, end = invoice_period("2026-03", BERLIN)
    assert (end - start).total_seconds() == 743 * 3600
    # One day (24 of 743 hours) of a 743.00 charge: 24.00 exactly.
    day = charge(
        unit_amount=Decimal("743.00"),
        quantity=Decimal(1),
        effective_from=start,
        effective_to=datetime(2026, 3, 2, tzinfo=ZoneInfo(BERLIN)).astimezone(UTC),
    )
    line = charge_line(day, start, end)
    assert line is not None and line.amount == Decimal("24.00")


quarter_hours = st.integers(min_value=0, max_value=745 * 4)


@settings(max_examples=100, deadline=None)
@given(cut=quarter_hours, unit=st.decimals(min_value=0, max_value=10_000, places=2))
def test_splitting_a_charge_in_two_loses_at_most_a_rounding(cut: int, unit: Decimal) -> None:
    """An end plus a new charge at the same instant bills the month within a cent of the one
    charge (each line is rounded once)."""
    instant = OCT_START + timedelta(minutes=15 * cut)
    whole = charge_line(charge(unit_amount=unit), OCT_START, OCT_END)
    assert whole is not None
    parts = [
        charge_line(charge(unit_amount=unit, effective_to=instant), OCT_START, OCT_END),
        charge_line(charge(unit_amount=unit, effective_from=instant), OCT_START, OCT_END),
    ]
    total = sum((part.amount for part in parts if part is not None), Decimal(0))
    assert abs(total - whole.amount) <= Decimal("0.01")
