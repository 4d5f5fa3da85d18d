"""Relative prices as pure functions: the rate follows whichever referenced price applies."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.invoices.rating import GroupUsage, MeterInfo, SegmentUsage, rate_meter
from service.meters.pricing import (
    PriceCycleError,
    PriceRule,
    RelativeTo,
    Tier,
    reference_cycle,
    resolve_rate,
)

JAN = datetime(2026, 1, 1, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
OCT_16 = datetime(2026, 10, 16, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
GPT = {"model": "gpt-4o"}
CACHE_5M = MeterInfo("cache_write_5m_tokens", "Cache writes (5m)", "tokens", "sum", "USD")


def rule(price_id: str, meter: str = "input_tokens", **fields: Any) -> PriceRule:
    values: dict[str, Any] = {
        "meter": meter,
        "currency": "USD",
        "unit_amount": Decimal("2.50"),
        "per_units": Decimal(1_000_000),
        "effective_from": JAN,
        "match": GPT,
    }
    values.update(fields)
    return PriceRule(id=price_id, **values)


def relative(price_id: str, factor: str, to: str = "input_tokens", **fields: Any) -> PriceRule:
    fields.setdefault("per_units", None)
    return rule(
        price_id,
        fields.pop("meter", "cache_write_5m_tokens"),
        unit_amount=Decimal(0),
        relative_to=RelativeTo(meter=to, factor=Decimal(factor)),
        **fields,
    )


def rate_of(prices: list[PriceRule], tenant_id: str = "acme", **attributes: str) -> Any:
    return resolve_rate(
        prices,
        meter="cache_write_5m_tokens",
        tenant_id=tenant_id,
        attributes=attributes or GPT,
        at=OCT,
    )


def test_relative_rate_is_factor_times_the_list_price_and_shows_its_per_units() -> None:
    prices = [rule("list"), relative("cw", "1.25")]
    rate = rate_of(prices)
    assert rate.price.id == "cw"
    assert [p.id for p in rate.basis] == ["list"]
    assert (rate.unit_amount, rate.per_units) == (Decimal("3.125"), Decimal(1_000_000))


def test_a_tenant_override_of_the_reference_carries_through() -> None:
    prices = [
        rule("list"),
        rule("acme", tenant_id="acme", unit_amount=Decimal("2.00")),
        relative("cw", "1.25"),
    ]
    assert rate_of(prices, "acme").unit_amount == Decimal("2.5")
    assert rate_of(prices, "globex").unit_amount == Decimal("3.125")


def test_own_per_units_only_changes_how_the_amount_shows() -> None:
    prices = [rule("list"), relative("cw", "2", per_units=Decimal(1000))]
    rate = rate_of(prices)
    # 2 x 2.50 per 1M tokens = 0.005 per 1000 tokens.
    assert (rate.unit_amount, rate.per_units) == (Decimal("0.005"), Decimal(1000))


def test_nothing_to_refer_to_is_unpriced() -> None:
    assert rate_of([relative("cw", "1.25")]) is None
    assert rate_of([rule("list"), relative("cw", "1.25")], model="claude") is None


def test_chains_multiply_and_cycles_raise() -> None:
    prices = [
        rule("list"),
        relative("hour", "2", meter="cache_write_1h_tokens"),
        relative("cw", "0.5", to="cache_write_1h_tokens"),
    ]
    rate = rate_of(prices)
    assert rate.unit_amount == Decimal("2.5")  # 0.5 x 2 x 2.50
    assert [p.id for p in rate.basis] == ["hour", "list"]
    looping = [
        relative("a", "1", to="cache_write_1h_tokens"),
        relative("b", "1", meter="cache_write_1h_tokens", to="cache_write_5m_tokens"),
    ]
    with pytest.raises(PriceCycleError):
        rate_of(looping)


def test_a_graduated_reference_lends_its_first_tier() -> None:
    tiers = (Tier(Decimal(1000), Decimal("4")), Tier(None, Decimal("3")))
    prices = [rule("tiered", tiers=tiers, unit_amount=Decimal("4")), relative("cw", "1.5")]
    assert rate_of(prices).unit_amount == Decimal("6")


def test_reference_cycle_finds_the_loop_a_new_reference_would_close() -> None:
    graph = {"b": {"c"}, "c": {"a"}}
    assert reference_cycle(graph, "a", "b") == ["a", "b", "c", "a"]
    assert reference_cycle(graph, "a", "a") == ["a", "a"]
    assert reference_cycle(graph, "d", "b") == []


def test_rating_splits_lines_where_the_referenced_price_changes() -> None:
    """Input list price 2.50 until Oct 16, then 2.00; cache writes at 1.25 times input.
    1M tokens before (3.125 per 1M -> 3.13 rounded from 3.125) and 2M after (2.50 per 1M)."""
    prices = [
        rule("old", effective_to=OCT_16),
        rule("new", unit_amount=Decimal("2.00"), effective_from=OCT_16),
        relative("cw", "1.25"),
    ]
    usage = [
        GroupUsage(
            GPT,
            (
                SegmentUsage(OCT, OCT_16, Decimal(1_000_000), 3),
                SegmentUsage(OCT_16, NOV, Decimal(2_000_000), 5),
            ),
        )
    ]
    lines = rate_meter(CACHE_5M, usage, prices, tenant_id="acme", period_start=OCT, period_end=NOV)
    assert [
        (line.price_id, line.quantity, line.unit_amount, line.amount, line.period_start)
        for line in lines
    ] == [
        ("cw", Decimal(1_000_000), Decimal("3.125"), Decimal("3.13"), OCT),
        ("cw", Decimal(2_000_000), Decimal("2.5"), Decimal("5.00"), OCT_16),
    ]
    assert lines[0].description == (
        "Cache writes (5m) — model=gpt-4o — 1.25 times input_tokens (per 1000000 tokens)"
    )


amounts = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False)
factors = st.decimals(min_value=Decimal("0.0001"), max_value=100, places=4, allow_nan=False)
per_units = st.sampled_from([Decimal(1), Decimal(1000), Decimal(1_000_000)])


@settings(max_examples=200, deadline=None)
@given(
    list_amount=amounts,
    override=st.none() | amounts,
    list_per=per_units,
    override_per=per_units,
    factor=factors,
    own_per=st.none() | per_units,
    tenant=st.sampled_from(["acme", "globex"]),
    quantity=st.integers(min_value=0, max_value=10**9),
)
def test_relative_rate_matches_a_naive_oracle(
    list_amount: Decimal,
    override: Decimal | None,
    list_per: Decimal,
    override_per: Decimal,
    factor: Decimal,
    own_per: Decimal | None,
    tenant: str,
    quantity: int,
) -> None:
    prices = [rule("list", unit_amount=list_amount, per_units=list_per)]
    if override is not None:
        prices.append(rule("acme", tenant_id="acme", unit_amount=override, per_units=override_per))
    prices.append(relative("cw", str(factor), per_units=own_per))
    rate = rate_of(prices, tenant)
    # Oracle: exact fractions, the referenced price picked by hand.
    if tenant == "acme" and override is not None:
        ref_amount, ref_per = override, override_per
    else:
        ref_amount, ref_per = list_amount, list_per
    per_unit = Fraction(factor) * Fraction(ref_amount) / Fraction(ref_per)
    shown_per = own_per if own_per is not None else ref_per
    assert rate.per_units == shown_per
    assert Fraction(rate.unit_amount) == per_unit * Fraction(shown_per)
    assert Fraction(rate.unit_amount) / Fraction(rate.per_units) * quantity == per_unit * quantity
