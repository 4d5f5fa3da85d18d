"""Price resolution: override beats list, specific beats general, effective dates, overlaps."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from service.meters.pricing import (
    AmbiguousPriceError,
    PriceRule,
    Tier,
    price_applies,
    price_boundaries,
    prices_conflict,
    prices_overlap,
    resolve_price,
    validate_tiers,
)

JAN = datetime(2026, 1, 1, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
OCT_15 = datetime(2026, 10, 15, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
GPT4O = {"model": "gpt-4o"}


def price(price_id: str, **fields: Any) -> PriceRule:
    values: dict[str, Any] = {
        "meter": "input_tokens",
        "currency": "USD",
        "unit_amount": Decimal("2.50"),
        "per_units": Decimal(1_000_000),
        "effective_from": JAN,
    }
    values.update(fields)
    return PriceRule(id=price_id, **values)


def resolve(prices: list[PriceRule], attributes: Mapping[str, str | None], **kw: Any) -> str | None:
    tenant_id = kw.get("tenant_id", "acme")
    at = kw.get("at", OCT)
    found = resolve_price(prices, tenant_id=tenant_id, attributes=attributes, at=at)
    return None if found is None else found.id


# --- price_applies ---------------------------------------------------------------------------


def test_applies_checks_tenant_match_and_dates() -> None:
    rule = price("p", match=GPT4O, effective_from=OCT, effective_to=NOV)
    attrs = {"model": "gpt-4o", "region": "eu"}
    assert price_applies(rule, tenant_id="acme", attributes=attrs, at=OCT)
    assert price_applies(
        rule, tenant_id="acme", attributes=attrs, at=NOV - timedelta(microseconds=1)
    )
    assert not price_applies(rule, tenant_id="acme", attributes=attrs, at=NOV)  # exclusive end
    assert not price_applies(
        rule, tenant_id="acme", attributes=attrs, at=OCT - timedelta(seconds=1)
    )
    assert not price_applies(rule, tenant_id="acme", attributes={"model": "gpt-4o-mini"}, at=OCT)
    assert not price_applies(rule, tenant_id="acme", attributes={"model": None}, at=OCT)
    assert not price_applies(rule, tenant_id="acme", attributes={}, at=OCT)


def test_override_applies_only_to_its_tenant() -> None:
    override = price("o", tenant_id="acme")
    assert price_applies(override, tenant_id="acme", attributes={}, at=OCT)
    assert not price_applies(override, tenant_id="globex", attributes={}, at=OCT)
    assert price_applies(price("list"), tenant_id="globex", attributes={}, at=OCT)


def test_applies_compares_instants_across_time_zones() -> None:
    rule = price("p", effective_from=OCT)
    one_hour_before_in_cet = datetime(2026, 10, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert not price_applies(rule, tenant_id="acme", attributes={}, at=one_hour_before_in_cet)


# --- resolve_price ---------------------------------------------------------------------------


def test_no_price_gives_none() -> None:
    assert resolve([], {"model": "gpt-4o"}) is None
    assert resolve([price("p", match=GPT4O)], {"model": "llama"}) is None


def test_specific_beats_general() -> None:
    prices = [
        price("general"),
        price("model", match=GPT4O),
        price("model-region", match={"model": "gpt-4o", "region": "eu"}),
    ]
    assert resolve(prices, {"model": "gpt-4o", "region": "eu"}) == "model-region"
    assert resolve(prices, {"model": "gpt-4o", "region": "us"}) == "model"
    assert resolve(prices, {"model": "llama", "region": "eu"}) == "general"


def test_override_beats_list_even_when_less_specific() -> None:
    prices = [
        price("list-gpt4o", match=GPT4O),
        price("acme-everything", tenant_id="acme", unit_amount=Decimal("2.00")),
    ]
    assert resolve(prices, GPT4O, tenant_id="acme") == "acme-everything"
    assert resolve(prices, GPT4O, tenant_id="globex") == "list-gpt4o"


def test_specific_override_beats_general_override() -> None:
    prices = [
        price("acme-all", tenant_id="acme"),
        price("acme-gpt4o", tenant_id="acme", match=GPT4O),
        price("list-gpt4o", match=GPT4O),
    ]
    assert resolve(prices, GPT4O) == "acme-gpt4o"
    assert resolve(prices, {"model": "llama"}) == "acme-all"


def test_effective_dates_pick_the_price_in_force() -> None:
    prices = [
        price("old", effective_from=JAN, effective_to=OCT_15),
        price("new", effective_from=OCT_15, unit_amount=Decimal("3.00")),
        price("future-override", tenant_id="acme", effective_from=NOV),
    ]
    assert resolve(prices, {}, at=OCT) == "old"
    assert resolve(prices, {}, at=OCT_15 - timedelta(microseconds=1)) == "old"
    assert resolve(prices, {}, at=OCT_15) == "new"
    assert resolve(prices, {}, at=NOV) == "future-override"
    assert resolve(prices, {}, at=JAN - timedelta(days=1)) is None


def test_expired_override_falls_back_to_list() -> None:
    prices = [price("list"), price("acme", tenant_id="acme", effective_to=OCT)]
    assert resolve(prices, {}, at=OCT - timedelta(days=1)) == "acme"
    assert resolve(prices, {}, at=OCT) == "list"


def test_tie_raises_instead_of_picking() -> None:
    prices = [price("b", match=GPT4O), price("a", match=GPT4O)]
    with pytest.raises(AmbiguousPriceError) as raised:
        resolve(prices, GPT4O)
    assert raised.value.price_ids == ("a", "b")
    assert "'a'" in str(raised.value)


def test_equally_specific_different_keys_tie_and_conflict() -> None:
    by_model = price("by-model", match=GPT4O)
    by_region = price("by-region", match={"region": "eu"})
    assert not prices_overlap(by_model, by_region)
    assert prices_conflict(by_model, by_region)
    with pytest.raises(AmbiguousPriceError):
        resolve([by_model, by_region], {"model": "gpt-4o", "region": "eu"})
    assert resolve([by_model, by_region], {"model": "gpt-4o", "region": "us"}) == "by-model"


# --- overlap / conflict ----------------------------------------------------------------------


def test_overlap_rule() -> None:
    base = price("a", match=GPT4O, effective_from=OCT, effective_to=NOV)
    assert prices_overlap(base, price("b", match={"model": "gpt-4o"}, effective_from=OCT_15))
    assert prices_overlap(base, price("b", match=GPT4O, effective_from=JAN))  # open-ended
    # half-open intervals: [Oct, Nov) and [Nov, ...) only touch
    assert not prices_overlap(base, price("b", match=GPT4O, effective_from=NOV))
    assert not prices_overlap(base, price("b", match=GPT4O, effective_from=JAN, effective_to=OCT))
    assert not prices_overlap(base, price("b", match=GPT4O, meter="output_tokens"))
    assert not prices_overlap(base, price("b", match=GPT4O, tenant_id="acme"))
    assert not prices_overlap(base, price("b", match={}))
    assert not prices_overlap(base, price("b", match={"model": "gpt-4o", "region": "eu"}))
    assert prices_overlap(
        price("x", tenant_id="acme", match={"a": "1", "b": "2"}),
        price("y", tenant_id="acme", match={"b": "2", "a": "1"}),
    )


def test_conflict_rule() -> None:
    assert prices_conflict(price("a", match=GPT4O), price("b", match=GPT4O))
    assert not prices_conflict(price("a", match=GPT4O), price("b", match={"model": "llama"}))
    assert not prices_conflict(price("a", match=GPT4O), price("b", match={}))
    assert not prices_conflict(
        price("a", match=GPT4O, effective_to=OCT), price("b", match={"r": "eu"}, effective_from=OCT)
    )
    assert not prices_conflict(price("a", match=GPT4O), price("b", match=GPT4O, tenant_id="acme"))


# --- tiers -----------------------------------------------------------------------------------


def test_valid_tiers() -> None:
    validate_tiers([])
    validate_tiers([Tier(None, Decimal("0.001"))])
    validate_tiers(
        [
            Tier(Decimal(1000), Decimal(0)),
            Tier(Decimal(10000), Decimal("0.002")),
            Tier(None, Decimal("0.001")),
        ]
    )


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        (
            [Tier(Decimal(10), Decimal(1)), Tier(Decimal(10), Decimal(1)), Tier(None, Decimal(1))],
            r"tiers\[1\]\.up_to \(10\) must be greater than tiers\[0\]\.up_to",
        ),
        (
            [Tier(Decimal(10), Decimal(1)), Tier(Decimal(5), Decimal(1)), Tier(None, Decimal(1))],
            r"tiers\[1\]\.up_to",
        ),
        ([Tier(Decimal(0), Decimal(1)), Tier(None, Decimal(1))], r"tiers\[0\]\.up_to must be"),
        ([Tier(Decimal(-5), Decimal(1)), Tier(None, Decimal(1))], r"tiers\[0\]\.up_to must be"),
        ([Tier(None, Decimal(1)), Tier(None, Decimal(1))], r"tiers\[0\]\.up_to is open-ended"),
        (
            [Tier(Decimal(10), Decimal(1)), Tier(Decimal(20), Decimal(1))],
            r"tiers\[1\]\.up_to must be null",
        ),
        ([Tier(Decimal(10), Decimal(-1)), Tier(None, Decimal(1))], r"tiers\[0\]\.unit_amount"),
        ([Tier(Decimal(10), Decimal(1)), Tier(None, Decimal("NaN"))], r"tiers\[1\]\.unit_amount"),
    ],
)
def test_invalid_tiers_name_the_tier(tiers: list[Tier], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_tiers(tiers)


def test_price_rule_validates_itself() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        price("p", effective_from=datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="effective_to must be after"):
        price("p", effective_from=OCT, effective_to=OCT)
    with pytest.raises(ValueError, match="per_units"):
        price("p", per_units=Decimal(0))
    with pytest.raises(ValueError, match="unit_amount"):
        price("p", unit_amount=Decimal("-1"))
    with pytest.raises(ValueError, match="currency"):
        price("p", currency="usd")
    with pytest.raises(ValueError, match="last tier"):
        price("p", tiers=(Tier(Decimal(10), Decimal(1)),))


# --- boundaries ------------------------------------------------------------------------------


def test_price_boundaries_are_sorted_distinct_and_strictly_inside() -> None:
    oct_20 = datetime(2026, 10, 20, tzinfo=UTC)
    oct_20_in_cet = oct_20.astimezone(timezone(timedelta(hours=2)))
    prices = [
        price("a", effective_from=JAN, effective_to=OCT_15),
        price("b", effective_from=OCT_15, effective_to=oct_20, match=GPT4O),
        price("c", effective_from=oct_20_in_cet, match={"model": "llama"}),
        price("d", effective_from=OCT),  # on the start: not inside
        price("e", effective_from=NOV),  # on the end: not inside
    ]
    assert price_boundaries(prices, OCT, NOV) == [OCT_15, oct_20]
    assert price_boundaries(prices, OCT_15, oct_20) == []
    assert price_boundaries([], OCT, NOV) == []


# --- properties ------------------------------------------------------------------------------

DAY0 = datetime(2026, 9, 1, tzinfo=UTC)
TENANTS = [None, "acme", "globex"]
KEY_VALUES = {"model": ["gpt-4o", "llama"], "region": ["eu", "us"]}


@st.composite
def price_rules(draw: st.DrawFn, keys: tuple[str, ...] = ("model", "region")) -> PriceRule:
    start = draw(st.integers(min_value=0, max_value=60))
    length = draw(st.none() | st.integers(min_value=1, max_value=60))
    match = {}
    for key in keys:
        if draw(st.booleans()):
            match[key] = draw(st.sampled_from(KEY_VALUES[key]))
    return PriceRule(
        id="",
        meter="input_tokens",
        currency="USD",
        unit_amount=Decimal(draw(st.integers(min_value=0, max_value=1000))),
        match=match,
        tenant_id=draw(st.sampled_from(TENANTS)),
        effective_from=DAY0 + timedelta(days=start),
        effective_to=None if length is None else DAY0 + timedelta(days=start + length),
    )


def with_ids(rules: list[PriceRule]) -> list[PriceRule]:
    return [
        PriceRule(
            id=f"p{index}",
            meter=rule.meter,
            currency=rule.currency,
            unit_amount=rule.unit_amount,
            match=rule.match,
            tenant_id=rule.tenant_id,
            effective_from=rule.effective_from,
            effective_to=rule.effective_to,
        )
        for index, rule in enumerate(rules)
    ]


def admitted(rules: list[PriceRule], refuse: Any) -> list[PriceRule]:
    """The prices an admin API applying `refuse` would have accepted, in order."""
    kept: list[PriceRule] = []
    for rule in rules:
        if not any(refuse(rule, other) for other in kept):
            kept.append(rule)
    return with_ids(kept)


attribute_values = st.fixed_dictionaries(
    {
        "model": st.none() | st.sampled_from([*KEY_VALUES["model"], "other"]),
        "region": st.none() | st.sampled_from(KEY_VALUES["region"]),
    }
)
instants = st.integers(min_value=-5, max_value=130).map(lambda days: DAY0 + timedelta(days=days))
tenants = st.sampled_from(["acme", "globex", "initech"])


@settings(max_examples=200, deadline=None)
@given(
    rules=st.lists(price_rules(), max_size=12),
    attributes=attribute_values,
    at=instants,
    tenant_id=tenants,
)
def test_resolution_properties_when_conflicts_are_refused(
    rules: list[PriceRule], attributes: dict[str, str | None], at: datetime, tenant_id: str
) -> None:
    prices = admitted(rules, prices_conflict)
    applicable = [
        p for p in prices if price_applies(p, tenant_id=tenant_id, attributes=attributes, at=at)
    ]
    found = resolve_price(prices, tenant_id=tenant_id, attributes=attributes, at=at)  # no raise

    if not applicable:
        assert found is None
        return
    assert found is not None
    # never a price that does not apply; effective dates respected
    assert price_applies(found, tenant_id=tenant_id, attributes=attributes, at=at)
    assert found.effective_from <= at
    assert found.effective_to is None or at < found.effective_to
    assert found.tenant_id in (None, tenant_id)
    # an override always beats a list price
    if any(p.tenant_id is not None for p in applicable):
        assert found.tenant_id == tenant_id
    # then the most specific wins, and it is the only one that specific
    same_level = [p for p in applicable if (p.tenant_id is None) == (found.tenant_id is None)]
    assert all(len(p.match) < len(found.match) for p in same_level if p is not found)
    # the order prices come in does not matter
    shuffled = list(prices)
    random.Random(len(prices)).shuffle(shuffled)
    assert resolve_price(shuffled, tenant_id=tenant_id, attributes=attributes, at=at) is found


@settings(max_examples=200, deadline=None)
@given(
    rules=st.lists(price_rules(keys=("model",)), max_size=12),
    attributes=attribute_values,
    at=instants,
    tenant_id=tenants,
)
def test_never_two_winners_when_overlaps_are_refused(
    rules: list[PriceRule], attributes: dict[str, str | None], at: datetime, tenant_id: str
) -> None:
    # With prices matching on a single key, the overlap rule alone rules out ties.
    prices = admitted(rules, prices_overlap)
    found = resolve_price(prices, tenant_id=tenant_id, attributes=attributes, at=at)
    if found is not None:
        assert price_applies(found, tenant_id=tenant_id, attributes=attributes, at=at)


@settings(max_examples=200, deadline=None)
@given(
    rules=st.lists(price_rules(), max_size=10),
    override_match=st.sampled_from([{}, {"model": "gpt-4o"}]),
    at=instants,
)
def test_an_applicable_override_always_wins(
    rules: list[PriceRule], override_match: dict[str, str], at: datetime
) -> None:
    list_prices = admitted([r for r in rules if r.tenant_id is None], prices_conflict)
    override = price("override", tenant_id="acme", match=override_match, effective_from=DAY0)
    attributes = {"model": "gpt-4o", "region": "eu"}
    assume(at >= DAY0)
    found = resolve_price([*list_prices, override], tenant_id="acme", attributes=attributes, at=at)
    assert found is override
    # and it never leaks to another tenant
    other = resolve_price(
        [*list_prices, override], tenant_id="globex", attributes=attributes, at=at
    )
    assert other is None or other.tenant_id is None


@settings(max_examples=200, deadline=None)
@given(
    tenant=st.sampled_from([None, "acme"]),
    general_match=st.sampled_from([{}, {"model": "gpt-4o"}]),
    extra=st.sampled_from([{"region": "eu"}, {"region": "eu", "project_id": "p1"}]),
    at=instants,
)
def test_specific_beats_general_at_the_same_level(
    tenant: str | None, general_match: dict[str, str], extra: dict[str, str], at: datetime
) -> None:
    assume(at >= DAY0)
    general = price("general", tenant_id=tenant, match=general_match, effective_from=DAY0)
    specific = price(
        "specific", tenant_id=tenant, match={**general_match, **extra}, effective_from=DAY0
    )
    attributes = {"model": "gpt-4o", "region": "eu", "project_id": "p1"}
    for prices in ([general, specific], [specific, general]):
        assert resolve_price(prices, tenant_id="acme", attributes=attributes, at=at) is specific
    elsewhere = {**attributes, "region": "us"}
    assert (
        resolve_price([general, specific], tenant_id="acme", attributes=elsewhere, at=at) is general
    )
