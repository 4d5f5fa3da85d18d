"""Charge models: free units, packages, graduated and volume tiers with flat amounts, minimums.

Hand-worked examples of `price_quantity` and of invoice lines (`rate_meter`), then properties
against a naive oracle that prices unit by unit."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.invoices.rating import (
    GroupUsage,
    MeterInfo,
    SegmentUsage,
    adjustment_lines,
    invoice_totals,
    rate_meter,
)
from service.meters.pricing import PriceRule, RelativeTo, Tier, price_quantity, resolve_rate

JAN = datetime(2026, 1, 1, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
OCT_15 = datetime(2026, 10, 15, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)

CALLS = MeterInfo("api_calls", "API calls", "calls", "sum", "USD")
D = Decimal


def price(price_id: str = "p", **fields: Any) -> PriceRule:
    values: dict[str, Any] = {
        "meter": CALLS.event_name,
        "currency": "USD",
        "unit_amount": D(0),
        "per_units": D(1),
        "effective_from": JAN,
    }
    values.update(fields)
    return PriceRule(id=price_id, **values)


def tiers(*steps: tuple[int | None, str, str]) -> tuple[Tier, ...]:
    """(up_to, unit_amount, flat_amount) per tier."""
    return tuple(Tier(None if up is None else D(up), D(unit), D(flat)) for up, unit, flat in steps)


def rate(prices: list[PriceRule], *segments: tuple[datetime, datetime, int | str]) -> list[Any]:
    usage = GroupUsage({}, tuple(SegmentUsage(a, b, D(q), 1) for a, b, q in segments))
    return rate_meter(CALLS, [usage], prices, tenant_id="acme", period_start=OCT, period_end=NOV)


def shares(priced: Any) -> list[tuple[int, str, str, str]]:
    return [
        (share.tier, str(share.quantity), str(share.flat_amount), str(share.amount))
        for share in priced.tiers
    ]


# --- hand-worked: what a quantity costs --------------------------------------------------------

# 1,000 calls free; then up to 10,000 at 0.002 with a 5.00 platform fee; up to 50,000 at 0.001
# with 10.00 more; above that 0.0005.
GRADUATED = tiers((10_000, "0.002", "5.00"), (50_000, "0.001", "10.00"), (None, "0.0005", "0"))


def test_graduated_tiers_with_flat_amounts_and_free_units() -> None:
    rule = price(tiers=GRADUATED, free_units=D(1000))
    priced = price_quantity(rule, D(25_503))
    # 24,503 after free units: 10,000 x 0.002 + 5.00 = 25.00; 14,503 x 0.001 + 10.00 = 24.503
    assert priced.free_units_applied == 1000
    assert shares(priced) == [(1, "10000", "5.00", "25.000"), (2, "14503", "10.00", "24.503")]
    assert priced.amount == D("49.503")


@pytest.mark.parametrize(
    ("quantity", "amount", "entered"),
    [
        (0, "0", []),  # no usage: no tier entered, no flat amount
        (1000, "0", []),  # all free: still no tier entered
        (1001, "5.002", [1]),  # the first unit above the allowance enters tier 1 (and its fee)
        (11_000, "25.000", [1]),  # 10,000 net: up_to is inclusive, still tier 1
        (11_001, "35.001", [1, 2]),  # one more unit enters tier 2 and adds its 10.00
    ],
)
def test_flat_amounts_count_when_the_net_quantity_enters_the_tier(
    quantity: int, amount: str, entered: list[int]
) -> None:
    priced = price_quantity(price(tiers=GRADUATED, free_units=D(1000)), D(quantity))
    assert priced.amount == D(amount)
    assert [share.tier for share in priced.tiers] == entered


def test_flat_amounts_are_never_divided_by_per_units() -> None:
    rule = price(tiers=tiers((1_000_000, "2.00", "3.00"), (None, "1.00", "0")), per_units=D(10**6))
    # 500,000 tokens x 2.00 per 1M = 1.00, plus the tier's 3.00
    assert price_quantity(rule, D(500_000)).amount == D("4.00")


@pytest.mark.parametrize(
    ("quantity", "tier", "amount"),
    [
        (100, 1, "10.00"),  # up_to inclusive: 100 is in tier 1
        (D("100.5"), 2, "10.04"),  # 100.5 x 0.08 + 2.00 = 10.04
        (250, 2, "22.00"),  # 250 x 0.08 + 2.00
        (1000, 2, "82.00"),
        (1001, 3, "55.05"),  # volume: fewer dollars for more units across a boundary
    ],
)
def test_volume_tiers_price_every_unit_at_the_reached_tier(
    quantity: int | Decimal, tier: int, amount: str
) -> None:
    rule = price(
        tiers=tiers((100, "0.10", "0"), (1000, "0.08", "2.00"), (None, "0.05", "5.00")),
        tier_mode="volume",
    )
    priced = price_quantity(rule, D(quantity))
    [share] = priced.tiers
    assert (share.tier, share.quantity) == (tier, D(quantity))
    assert priced.amount == D(amount)


def test_volume_with_free_units_prices_what_is_left() -> None:
    rule = price(
        tiers=tiers((100, "0.10", "0"), (None, "0.05", "1.00")),
        tier_mode="volume",
        free_units=D(20),
    )
    # 130 - 20 = 110 net: tier 2, 110 x 0.05 + 1.00 = 6.50
    assert price_quantity(rule, D(130)).amount == D("6.50")
    # 120 - 20 = 100 net: tier 1, 10.00
    assert price_quantity(rule, D(120)).amount == D("10.00")


@pytest.mark.parametrize(
    ("quantity", "packages", "free", "amount"),
    [
        (0, 0, 0, "0"),
        (100, 0, 100, "0"),
        (101, 1, 100, "1.25"),  # one unit past the allowance starts a package
        (150, 1, 100, "1.25"),
        (237, 3, 100, "3.75"),  # 137 left: rounded up to 3 packages of 50
        (D("250.5"), 4, 100, "5.00"),
    ],
)
def test_packages_after_free_units(
    quantity: int | Decimal, packages: int, free: int, amount: str
) -> None:
    rule = price(unit_amount=D("1.25"), package_size=D(50), free_units=D(100))
    priced = price_quantity(rule, D(quantity))
    assert (priced.packages, priced.free_units_applied) == (packages, free)
    assert priced.amount == D(amount)


def test_free_units_on_a_plain_price() -> None:
    rule = price(unit_amount=D("2.50"), per_units=D(10**6), free_units=D(10**6))
    assert price_quantity(rule, D(3_000_000)).amount == D("5.00")


def test_negative_quantities_are_credited_at_the_first_rate() -> None:
    assert price_quantity(price(unit_amount=D(2)), D(-3)).amount == D(-6)
    # Tiers: the first tier's rate, no flat amount, whatever the size of the credit.
    credit = price_quantity(price(tiers=GRADUATED, free_units=D(1000)), D(-20_000))
    assert (credit.amount, credit.tiers, credit.free_units_applied) == (D("-40.000"), (), 0)
    # Packages: the package's amount spread over its units, no rounding up.
    assert price_quantity(price(unit_amount=D("1.25"), package_size=D(50)), D(-10)).amount == D(
        "-0.25"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tier_mode": "volume"}, "volume pricing needs tiers"),
        ({"package_size": D(10), "per_units": D(1000)}, "per_units must be 1"),
        ({"package_size": D(10), "tiers": GRADUATED}, "package_size cannot be combined"),
        ({"package_size": D(0)}, "package_size must be"),
        ({"free_units": D(-1)}, "free_units must be"),
        ({"minimum_amount": D(-1)}, "minimum_amount must be"),
    ],
)
def test_impossible_rules_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        price(**fields)


def test_a_relative_price_refers_to_a_package_price_per_unit() -> None:
    base = price("base", unit_amount=D("1.25"), package_size=D(50))
    relative = price(
        "rel",
        meter="other",
        unit_amount=D(0),
        per_units=D(1000),
        relative_to=RelativeTo(meter=CALLS.event_name, factor=D(2)),
    )
    rate_ = resolve_rate([base, relative], meter="other", tenant_id="acme", attributes={}, at=OCT)
    assert rate_ is not None
    # 2 x 1.25 / 50 per unit = 0.05 per unit = 50.00 per 1000
    assert rate_.unit_amount == D(50)


# --- hand-worked: invoice lines ---------------------------------------------------------------


def test_one_line_per_tiered_price_says_what_applied() -> None:
    [line] = rate([price(tiers=GRADUATED, free_units=D(1000))], (OCT, NOV, 25_503))
    assert (line.kind, line.quantity, line.amount, line.tier, line.unit_amount) == (
        "usage",
        D(25_503),
        D("49.50"),  # 49.503 rounded once
        2,
        D("0.001"),
    )
    assert line.free_units_applied == 1000 and line.packages is None
    assert line.description == "API calls — graduated tiers — 1000 calls free"


def test_a_package_line() -> None:
    [line] = rate(
        [price(unit_amount=D("1.25"), package_size=D(50), free_units=D(100))], (OCT, NOV, 237)
    )
    assert (line.quantity, line.packages, line.free_units_applied, line.amount) == (
        D(237),
        D(3),
        D(100),
        D("3.75"),
    )
    assert line.unit_amount == D("1.25") and line.tiers == ()
    assert line.description == "API calls — 100 calls free — packages of 50 calls"


def test_minimum_tops_up_a_tiered_price() -> None:
    rule = price("gpu", tiers=tiers((60, "0", "0"), (None, "0.10", "0")), minimum_amount=D(20))
    lines = rate([rule], (OCT, NOV, 150))
    # 90 x 0.10 = 9.00, below the 20.00 minimum: an 11.00 minimum line after it
    assert [(line.kind, line.amount, line.price_id) for line in lines] == [
        ("usage", D("9.00"), "gpu"),
        ("minimum", D("11.00"), "gpu"),
    ]
    minimum = lines[1]
    assert minimum.description == "Minimum for API calls"
    assert (minimum.quantity, minimum.unit_amount, minimum.minimum_amount) == (
        D(1),
        D("11.00"),
        D(20),
    )
    assert invoice_totals(lines, "USD")[1] == D("20.00")
    # At or above the minimum: no minimum line; no usage: nothing at all.
    assert [line.kind for line in rate([rule], (OCT, NOV, 260))] == ["usage"]
    assert rate([rule], (OCT, NOV, 0)) == []
    # Usage within the free tier still pays the minimum (there was usage).
    assert [line.amount for line in rate([rule], (OCT, NOV, 10))] == [D("0.00"), D("20.00")]


def test_the_minimum_compares_the_rounded_line() -> None:
    rule = price(unit_amount=D("0.001"), minimum_amount=D("1.00"))
    lines = rate([rule], (OCT, NOV, 995))  # 0.995 -> 1.00: nothing to top up
    assert [line.kind for line in lines] == ["usage"]
    lines = rate([rule], (OCT, NOV, 994))  # 0.994 -> 0.99: 0.01 more
    assert [(line.kind, line.amount) for line in lines] == [
        ("usage", D("0.99")),
        ("minimum", D("0.01")),
    ]


def test_a_price_change_that_keeps_the_structure_continues_the_period() -> None:
    # Free units are granted once a month, a started package is not billed twice, and the
    # minimum is the newer price's, once.
    old = price(
        "old",
        unit_amount=D("1.00"),
        package_size=D(50),
        free_units=D(100),
        minimum_amount=D(10),
        effective_to=OCT_15,
    )
    new = replace(
        old,
        id="new",
        unit_amount=D("2.00"),
        minimum_amount=D(8),
        effective_from=OCT_15,
        effective_to=None,
    )
    lines = rate([old, new], (OCT, OCT_15, 120), (OCT_15, NOV, 60))
    # old: 100 free, 20 net -> 1 package (covers up to 150 net) at 1.00
    # new: net 20 -> 80: packages up to ceil(80/50) = 2, one more, at 2.00
    assert [
        (line.price_id, line.packages, line.free_units_applied, line.amount) for line in lines
    ] == [
        ("old", D(1), D(100), D("1.00")),
        ("new", D(1), D(0), D("2.00")),
        ("new", None, None, D("5.00")),  # minimum 8.00 - 3.00
    ]
    assert lines[2].kind == "minimum"


def test_volume_tiers_across_a_price_change_use_the_period_total() -> None:
    shape = tiers((100, "0.10", "0"), (None, "0.05", "1.00"))
    old = price("old", tiers=shape, tier_mode="volume", effective_to=OCT_15)
    new = price(
        "new",
        tiers=tiers((100, "0.20", "0"), (None, "0.06", "3.00")),
        tier_mode="volume",
        effective_from=OCT_15,
    )
    lines = rate([old, new], (OCT, OCT_15, 80), (OCT_15, NOV, 70))
    # 150 in the month: tier 2 for every unit; 80 x 0.05 = 4.00; 70 x 0.06 + 3.00 = 7.20
    assert [(line.price_id, line.tier, line.amount) for line in lines] == [
        ("old", 2, D("4.00")),
        ("new", 2, D("7.20")),
    ]


def test_late_usage_moves_money_from_the_minimum_to_the_usage_line() -> None:
    rule = price("gpu", tiers=tiers((60, "0", "0"), (None, "0.10", "0")), minimum_amount=D(20))
    billed = rate([rule], (OCT, NOV, 150))
    current = rate([rule], (OCT, NOV, 250))  # 19.00 usage, 1.00 minimum
    adjustments = adjustment_lines(current, billed, period_label="2026-10")
    assert [(line.kind, line.adjusts_kind, line.quantity, line.amount) for line in adjustments] == [
        ("adjustment", "usage", D(100), D("10.00")),
        ("adjustment", "minimum", D(0), D("-10.00")),
    ]
    assert adjustment_lines(current, [*billed, *adjustments], period_label="2026-10") == []


def test_lines_stored_per_tier_compare_with_the_one_line() -> None:
    """Invoices finalized before a tiered price became one line stored a line per tier; late
    usage is still compared per price, not billed again in full."""
    rule = price("api", tiers=tiers((1000, "0", "0"), (None, "0.01", "0")))
    [now] = rate([rule], (OCT, NOV, 1500))
    stored = [
        replace(now, quantity=D(1000), unit_amount=D(0), amount=D("0.00"), tier=1, tiers=()),
        replace(now, quantity=D(400), unit_amount=D("0.01"), amount=D("4.00"), tier=2, tiers=()),
    ]
    [adjustment] = adjustment_lines([now], stored, period_label="2026-10")
    assert (adjustment.quantity, adjustment.amount) == (D(100), D("1.00"))


# --- properties ------------------------------------------------------------------------------


def naive_amount(rule: PriceRule, quantity: int) -> Fraction:
    """Unit by unit, for whole quantities and whole tier bounds: the oracle."""
    free = int(rule.free_units)
    net = max(quantity - free, 0)
    per_units = Fraction(rule.per_units or 1)
    if rule.package_size is not None:
        return math.ceil(Fraction(net) / Fraction(rule.package_size)) * Fraction(rule.unit_amount)
    if not rule.tiers:
        return net * Fraction(rule.unit_amount) / per_units

    def tier_of(unit: int) -> int:
        lower = 0
        for index, tier in enumerate(rule.tiers):
            if tier.up_to is None or lower < unit <= tier.up_to:
                return index
            lower = int(tier.up_to)
        raise AssertionError("open-ended last tier")

    if net == 0:
        return Fraction(0)
    if rule.tier_mode == "volume":
        tier = rule.tiers[tier_of(net)]
        return net * Fraction(tier.unit_amount) / per_units + Fraction(tier.flat_amount)
    total = Fraction(0)
    entered: set[int] = set()
    for unit in range(1, net + 1):
        index = tier_of(unit)
        total += Fraction(rule.tiers[index].unit_amount) / per_units
        if index not in entered:
            entered.add(index)
            total += Fraction(rule.tiers[index].flat_amount)
    return total


money = st.decimals(min_value=0, max_value=100, places=3, allow_nan=False, allow_infinity=False)


@st.composite
def whole_tiers(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(set(draw(st.lists(st.integers(1, 400), max_size=4))))
    ups: list[Decimal | None] = [*map(D, bounds), None]
    return tuple(Tier(up, draw(money), draw(money)) for up in ups)


@st.composite
def tiered_prices(draw: st.DrawFn) -> PriceRule:
    return price(
        tiers=draw(whole_tiers()),
        tier_mode=draw(st.sampled_from(["graduated", "volume"])),
        free_units=D(draw(st.integers(0, 50))),
        # Divisions by these are exact in decimal, so the oracle's fractions compare exactly.
        per_units=draw(st.sampled_from([D(1), D(10), D(1000)])),
    )


@st.composite
def package_prices(draw: st.DrawFn) -> PriceRule:
    return price(
        unit_amount=draw(money),
        package_size=D(draw(st.integers(1, 60))),
        free_units=D(draw(st.integers(0, 50))),
    )


@settings(max_examples=150, deadline=None)
@given(rule=tiered_prices() | package_prices(), quantity=st.integers(0, 600))
def test_price_quantity_matches_the_naive_oracle(rule: PriceRule, quantity: int) -> None:
    assert Fraction(price_quantity(rule, D(quantity)).amount) == naive_amount(rule, quantity)


@settings(max_examples=150, deadline=None)
@given(
    rule=tiered_prices().filter(lambda rule: rule.tier_mode == "graduated") | package_prices(),
    quantities=st.lists(st.integers(0, 600), min_size=2, max_size=2),
)
def test_graduated_and_package_rating_is_monotone_in_quantity(
    rule: PriceRule, quantities: list[int]
) -> None:
    low, high = sorted(quantities)
    assert price_quantity(rule, D(low)).amount <= price_quantity(rule, D(high)).amount
    # and the invoice line, rounded once, too
    low_lines, high_lines = rate([rule], (OCT, NOV, low)), rate([rule], (OCT, NOV, high))
    assert sum(line.amount for line in low_lines) <= sum(line.amount for line in high_lines)


@settings(max_examples=100, deadline=None)
@given(
    unit_amount=money,
    flat_amount=money,
    free=st.integers(0, 50),
    quantity=st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False),
)
def test_volume_equals_graduated_on_a_single_tier(
    unit_amount: Decimal, flat_amount: Decimal, free: int, quantity: Decimal
) -> None:
    single = (Tier(None, unit_amount, flat_amount),)
    graduated = price(tiers=single, free_units=D(free))
    volume = replace(graduated, tier_mode="volume")
    assert price_quantity(volume, quantity) == price_quantity(graduated, quantity)


@settings(max_examples=150, deadline=None)
@given(
    rule=tiered_prices() | package_prices(),
    parts=st.lists(st.integers(0, 300), min_size=1, max_size=4),
)
def test_splitting_a_period_never_changes_its_amount(rule: PriceRule, parts: list[int]) -> None:
    """What prices that continue each other bill adds up to what one price bills for the whole
    period (free units once, packages once, flat amounts once, the volume tier of the total)."""
    total = D(sum(parts))
    before = D(0)
    pieces = []
    for part in parts:
        pieces.append(price_quantity(rule, D(part), before=before, total=total))
        before += part
    whole = price_quantity(rule, total)
    assert sum((piece.amount for piece in pieces), D(0)) == whole.amount
    assert sum((piece.free_units_applied for piece in pieces), D(0)) == whole.free_units_applied
    if whole.packages is not None:
        assert sum((piece.packages or 0 for piece in pieces), D(0)) == whole.packages


def test_lines_stored_before_kinds_existed_still_decode() -> None:
    from service.invoices.service import line_from_snapshot

    stored = {
        "meter": "api_calls",
        "description": "API calls — tier 2",
        "match": {},
        "period_start": "2026-10-01T00:00:00Z",
        "period_end": "2026-11-01T00:00:00Z",
        "quantity": "900",
        "unit_amount": "0.01",
        "per_units": "1",
        "amount": "9.00",
        "tier": 2,
        "unpriced": False,
        "adjusts_period": None,
        "price_id": "api",
    }
    line = line_from_snapshot(stored)
    assert (line.kind, line.tiers, line.free_units_applied, line.adjusts_kind) == (
        "usage",
        (),
        None,
        None,
    )
    assert (line.tier, line.amount) == (2, D("9.00"))
