"""Rating: invoice lines from usage and prices, worked by hand and checked by properties."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, localcontext
from fractions import Fraction
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.common.money import currency_exponent
from service.invoices.rating import (
    GroupUsage,
    InvoiceLine,
    MeterInfo,
    SegmentUsage,
    adjustment_lines,
    invoice_totals,
    rate_meter,
)
from service.meters.pricing import (
    PriceRule,
    Tier,
    price_boundaries,
    prices_conflict,
    resolve_price,
)

JAN = datetime(2026, 1, 1, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
OCT_10 = datetime(2026, 10, 10, tzinfo=UTC)
OCT_15 = datetime(2026, 10, 15, tzinfo=UTC)
OCT_20 = datetime(2026, 10, 20, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)

INPUT_TOKENS = MeterInfo("input_tokens", "Input tokens", "tokens", "sum", "USD")
API_CALLS = MeterInfo("api_calls", "API calls", "calls", "count", "USD")
SEATS = MeterInfo("seats", "Seats", "seats", "last", "USD")
LOCAL_TOKENS = MeterInfo("local_tokens", "Local tokens", "tokens", "sum", "USD")

API_TIERS = (
    Tier(Decimal(1000), Decimal("0")),
    Tier(Decimal(10000), Decimal("0.002")),
    Tier(None, Decimal("0.001")),
)


def price(price_id: str, meter: MeterInfo = INPUT_TOKENS, **fields: Any) -> PriceRule:
    values: dict[str, Any] = {
        "meter": meter.event_name,
        "currency": meter.currency,
        "unit_amount": Decimal("2.50"),
        "per_units": Decimal(1_000_000),
        "effective_from": JAN,
    }
    values.update(fields)
    return PriceRule(id=price_id, **values)


def seg(
    start: datetime,
    end: datetime,
    total: str | int = 0,
    count: int = 0,
    last: str | None = None,
    last_at: datetime | None = None,
) -> SegmentUsage:
    return SegmentUsage(
        start, end, Decimal(total), count, None if last is None else Decimal(last), last_at
    )


def group(attributes: Mapping[str, str | None], *segments: SegmentUsage) -> GroupUsage:
    return GroupUsage(dict(attributes), tuple(segments))


def rate(
    meter: MeterInfo,
    groups: Sequence[GroupUsage],
    prices: Sequence[PriceRule],
    tenant_id: str = "acme",
) -> list[InvoiceLine]:
    return rate_meter(meter, groups, prices, tenant_id=tenant_id, period_start=OCT, period_end=NOV)


def amounts(lines: Sequence[InvoiceLine]) -> list[str]:
    return [str(line.amount) for line in lines]


def tier_rows(line: InvoiceLine) -> list[tuple[int, int, str]]:
    """(tier, quantity, exact amount) of each tier a tiered line entered."""
    return [(share.tier, int(share.quantity), str(share.amount)) for share in line.tiers]


# --- hand-worked examples --------------------------------------------------------------------


def test_llm_tokens_per_million() -> None:
    # 1,234,567 tokens x 2.50 / 1,000,000 = 3.0864175 -> 3.09
    prices = [price("gpt4o-in", match={"model": "gpt-4o"})]
    lines = rate(INPUT_TOKENS, [group({"model": "gpt-4o"}, seg(OCT, NOV, 1_234_567))], prices)
    assert lines == [
        InvoiceLine(
            meter="input_tokens",
            description="Input tokens — model=gpt-4o (per 1000000 tokens)",
            match={"model": "gpt-4o"},
            price_id="gpt4o-in",
            period_start=OCT,
            period_end=NOV,
            quantity=Decimal(1_234_567),
            unit_amount=Decimal("2.50"),
            per_units=Decimal(1_000_000),
            amount=Decimal("3.09"),
            tier=None,
            unpriced=False,
        )
    ]
    assert str(lines[0].amount) == "3.09"
    assert invoice_totals(lines, "USD") == (Decimal("3.09"), Decimal("3.09"))


def test_rating_does_not_depend_on_the_thread_context() -> None:
    prices = [price("p", per_units=Decimal(1000))]
    groups = [
        group({"project_id": "a"}, seg(OCT, NOV, 1_234_567)),
        group({"project_id": "b"}, seg(OCT, NOV, "0.00000000000000000000000000001")),
    ]
    with localcontext() as ctx:
        ctx.prec = 5
        ctx.rounding = ROUND_DOWN
        lines = rate(INPUT_TOKENS, groups, prices)
    # 1,234,567.00000000000000000000000000001 x 2.50 / 1,000 = 3086.4175000... -> 3086.42
    assert [(str(line.quantity), str(line.amount)) for line in lines] == [
        ("1234567.00000000000000000000000000001", "3086.42")
    ]
    # 0.00499999999999999999999999999999 must not become 0.005 on the way (28 digits would)
    tiny = rate(
        INPUT_TOKENS,
        [group({}, seg(OCT, NOV, "0.00499999999999999999999999999999"))],
        [price("p", unit_amount=Decimal(1), per_units=Decimal(1))],
    )
    assert amounts(tiny) == ["0.00"]


def test_groups_resolving_to_one_price_merge_into_one_line() -> None:
    prices = [price("gpt4o-in", match={"model": "gpt-4o"})]
    groups = [
        group({"model": "gpt-4o", "project_id": "p1"}, seg(OCT, NOV, 2_002)),
        group({"model": "gpt-4o", "project_id": "p2"}, seg(OCT, NOV, 2_002)),
    ]
    # one line, rounded once: 4,004 x 2.50 / 1,000,000 = 0.01001 -> 0.01; a line per project
    # would bill 0.005005 -> 0.01 twice, 0.02 in all
    lines = rate(INPUT_TOKENS, groups, prices)
    assert [(line.quantity, str(line.amount)) for line in lines] == [(Decimal(4004), "0.01")]


def test_specific_price_beats_general_per_group() -> None:
    prices = [
        price("gpt4o", match={"model": "gpt-4o"}),
        price("gpt4o-eu", match={"model": "gpt-4o", "region": "eu"}, unit_amount=Decimal("3")),
    ]
    groups = [
        group({"model": "gpt-4o", "region": "eu"}, seg(OCT, NOV, 1_000_000)),
        group({"model": "gpt-4o", "region": "us"}, seg(OCT, NOV, 2_000_000)),
    ]
    lines = rate(INPUT_TOKENS, groups, prices)
    assert [(line.price_id, line.quantity, str(line.amount)) for line in lines] == [
        ("gpt4o", Decimal(2_000_000), "5.00"),
        ("gpt4o-eu", Decimal(1_000_000), "3.00"),
    ]
    assert lines[1].description == "Input tokens — model=gpt-4o, region=eu (per 1000000 tokens)"


def test_tenant_override_beats_list_price() -> None:
    prices = [
        price("list-gpt4o", match={"model": "gpt-4o"}),
        price("acme-contract", tenant_id="acme", unit_amount=Decimal("2.00")),
        price("globex-contract", tenant_id="globex", unit_amount=Decimal("1.00")),
    ]
    usage = [group({"model": "gpt-4o"}, seg(OCT, NOV, 3_000_000))]
    acme = rate(INPUT_TOKENS, usage, prices, tenant_id="acme")
    assert [(line.price_id, str(line.amount)) for line in acme] == [("acme-contract", "6.00")]
    assert acme[0].match == {}
    initech = rate(INPUT_TOKENS, usage, prices, tenant_id="initech")
    assert [(line.price_id, str(line.amount)) for line in initech] == [("list-gpt4o", "7.50")]


def test_jpy_rounds_to_whole_yen_half_up() -> None:
    meter = MeterInfo("calls", "Calls", None, "count", "JPY")
    prices = [price("yen", meter, unit_amount=Decimal("0.5"), per_units=Decimal(1))]
    one = rate(meter, [group({}, seg(OCT, NOV, count=1))], prices)
    three = rate(meter, [group({}, seg(OCT, NOV, count=3))], prices)
    assert amounts(one) == ["1"]  # 0.5 -> 1
    assert amounts(three) == ["2"]  # 1.5 -> 2
    assert one[0].description == "Calls"  # per 1 unit: no "(per ...)"
    assert invoice_totals(one + three, "JPY") == (Decimal(3), Decimal(3))
    assert str(invoice_totals([], "JPY")[0]) == "0"


def test_kwd_rounds_to_three_places() -> None:
    meter = MeterInfo("gb", "Storage", "GB", "sum", "KWD")
    prices = [price("kwd", meter, unit_amount=Decimal("0.0012345"), per_units=Decimal(1))]
    lines = rate(meter, [group({}, seg(OCT, NOV, 1234))], prices)
    assert amounts(lines) == ["1.523"]  # 1234 x 0.0012345 = 1.5233730
    tie = rate(
        meter, [group({}, seg(OCT, NOV, "0.5"))], [replace(prices[0], unit_amount=Decimal("0.001"))]
    )
    assert amounts(tie) == ["0.001"]  # 0.0005 -> 0.001, half-up


def test_graduated_tiers_for_api_calls() -> None:
    # 25,000 calls: 1,000 free; 9,000 x 0.002 = 18.00; 15,000 x 0.001 = 15.00; total 33.00
    prices = [
        price("api", API_CALLS, unit_amount=Decimal(0), per_units=Decimal(1), tiers=API_TIERS)
    ]
    [line] = rate(API_CALLS, [group({}, seg(OCT, NOV, count=25_000))], prices)
    # One line for the price, its tiers inside it; it shows the highest tier's rate.
    assert (line.tier, line.quantity, line.unit_amount, str(line.amount)) == (
        3,
        Decimal(25_000),
        Decimal("0.001"),
        "33.00",
    )
    assert tier_rows(line) == [(1, 1000, "0"), (2, 9000, "18.000"), (3, 15000, "15.000")]
    assert line.description == "API calls — graduated tiers"
    assert line.kind == "usage"
    assert invoice_totals([line], "USD") == (Decimal("33.00"), Decimal("33.00"))


@pytest.mark.parametrize(
    ("calls", "expected", "amount"),
    [
        (500, [(1, 500, "0")], "0.00"),
        (1000, [(1, 1000, "0")], "0.00"),  # up_to is inclusive
        (1001, [(1, 1000, "0"), (2, 1, "0.002")], "0.00"),  # 0.002 -> 0.00
        (1003, [(1, 1000, "0"), (2, 3, "0.006")], "0.01"),  # 0.006 -> 0.01
        (10_000, [(1, 1000, "0"), (2, 9000, "18.000")], "18.00"),
        (10_500, [(1, 1000, "0"), (2, 9000, "18.000"), (3, 500, "0.500")], "18.50"),
    ],
)
def test_tier_edges(calls: int, expected: list[tuple[int, int, str]], amount: str) -> None:
    prices = [
        price("api", API_CALLS, unit_amount=Decimal(0), per_units=Decimal(1), tiers=API_TIERS)
    ]
    [line] = rate(API_CALLS, [group({}, seg(OCT, NOV, count=calls))], prices)
    assert tier_rows(line) == expected
    assert str(line.amount) == amount


def test_a_tiered_line_is_rounded_once() -> None:
    tiers = (Tier(Decimal(1), Decimal("0.0025")), Tier(None, Decimal("0.001")))
    prices = [price("api", API_CALLS, per_units=Decimal(1), tiers=tiers)]
    [line] = rate(API_CALLS, [group({}, seg(OCT, NOV, count=3))], prices)
    # 0.0025 + 2 x 0.001 = 0.0045 -> 0.00 once (per tier: 0.0025 -> 0.00, 0.002 -> 0.00)
    assert str(line.amount) == "0.00"
    [line] = rate(API_CALLS, [group({}, seg(OCT, NOV, count=4))], prices)
    # 0.0025 + 0.003 = 0.0055 -> 0.01 once; per tier it would be 0.00 + 0.00 = 0.00
    assert str(line.amount) == "0.01"


def test_tiers_with_per_units() -> None:
    tiers = (Tier(Decimal(1000), Decimal(0)), Tier(None, Decimal("2.00")))
    prices = [price("api", API_CALLS, unit_amount=Decimal(0), per_units=Decimal(1000), tiers=tiers)]
    [line] = rate(API_CALLS, [group({}, seg(OCT, NOV, count=4_500))], prices)
    # 3,500 x 2.00 / 1,000 = 7.00
    assert tier_rows(line) == [(1, 1000, "0"), (2, 3500, "7.00")]
    assert str(line.amount) == "7.00"
    assert line.description == "API calls — graduated tiers (per 1000 calls)"


def test_price_change_mid_period_splits_the_line() -> None:
    prices = [
        price("old", match={"model": "gpt-4o"}, effective_to=OCT_15),
        price("new", match={"model": "gpt-4o"}, effective_from=OCT_15, unit_amount=Decimal(3)),
    ]
    assert price_boundaries(prices, OCT, NOV) == [OCT_15]
    usage = group({"model": "gpt-4o"}, seg(OCT, OCT_15, 1_000_000), seg(OCT_15, NOV, 2_000_000))
    lines = rate(INPUT_TOKENS, [usage], prices)
    assert [
        (line.price_id, line.period_start, line.period_end, line.quantity, str(line.amount))
        for line in lines
    ] == [
        ("old", OCT, OCT_15, Decimal(1_000_000), "2.50"),
        ("new", OCT_15, NOV, Decimal(2_000_000), "6.00"),
    ]


def test_a_price_change_elsewhere_does_not_split_a_line() -> None:
    prices = [
        price("gpt4o-old", match={"model": "gpt-4o"}, effective_to=OCT_15),
        price("gpt4o-new", match={"model": "gpt-4o"}, effective_from=OCT_15),
        price("mini", match={"model": "gpt-4o-mini"}, unit_amount=Decimal("0.15")),
    ]
    # the caller splits every group at every boundary of the meter's prices
    usage = group(
        {"model": "gpt-4o-mini"}, seg(OCT, OCT_15, 1_000_000), seg(OCT_15, NOV, 1_000_000)
    )
    lines = rate(INPUT_TOKENS, [usage], prices)
    assert [
        (line.price_id, line.period_start, line.period_end, str(line.amount)) for line in lines
    ] == [("mini", OCT, NOV, "0.30")]


def test_segment_spanning_a_price_change_is_refused() -> None:
    prices = [
        price("old", effective_to=OCT_15),
        price("new", effective_from=OCT_15),
    ]
    with pytest.raises(ValueError, match="spans a price change"):
        rate(INPUT_TOKENS, [group({}, seg(OCT, NOV, 5))], prices)
    # a boundary of a price that can never apply to the group does not matter
    other = [price("all"), price("llama", match={"model": "llama"}, effective_from=OCT_15)]
    lines = rate(INPUT_TOKENS, [group({"model": "gpt-4o"}, seg(OCT, NOV, 1_000_000))], other)
    assert [line.price_id for line in lines] == ["all"]


def test_segment_outside_the_period_is_refused() -> None:
    with pytest.raises(ValueError, match="outside the period"):
        rate(INPUT_TOKENS, [group({}, seg(OCT - timedelta(days=1), NOV, 5))], [price("p")])


def test_override_for_part_of_the_period() -> None:
    prices = [
        price("list"),
        price(
            "promo",
            tenant_id="acme",
            unit_amount=Decimal(0),
            effective_from=OCT_10,
            effective_to=OCT_20,
        ),
    ]
    usage = group(
        {},
        seg(OCT, OCT_10, 1_000_000),
        seg(OCT_10, OCT_20, 5_000_000),
        seg(OCT_20, NOV, 1_000_000),
    )
    lines = rate(INPUT_TOKENS, [usage], prices)
    assert [
        (line.price_id, line.period_start, line.period_end, line.quantity, str(line.amount))
        for line in lines
    ] == [
        ("list", OCT, NOV, Decimal(2_000_000), "5.00"),
        ("promo", OCT_10, OCT_20, Decimal(5_000_000), "0.00"),
    ]


def test_unpriced_usage_is_reported_not_lost() -> None:
    prices = [price("gpt4o", LOCAL_TOKENS, match={"model": "gpt-4o"})]
    groups = [
        group({"model": "llama", "region": None}, seg(OCT, OCT_15, 100)),
        group({"model": "llama"}, seg(OCT_15, NOV, 23)),
        group({"model": None}, seg(OCT, NOV, 7)),
        group({"model": "gpt-4o"}, seg(OCT, NOV, 1_000_000)),
    ]
    lines = rate(LOCAL_TOKENS, groups, prices)
    assert [
        (line.match, line.price_id, line.quantity, str(line.amount), line.unpriced)
        for line in lines
    ] == [
        ({}, None, Decimal(7), "0.00", True),
        ({"model": "gpt-4o"}, "gpt4o", Decimal(1_000_000), "2.50", False),
        ({"model": "llama"}, None, Decimal(123), "0.00", True),
    ]
    llama = lines[2]
    assert llama.description == "Local tokens — model=llama (unpriced)"
    assert lines[0].description == "Local tokens (unpriced)"
    assert (llama.period_start, llama.period_end) == (OCT, NOV)
    assert llama.unit_amount == 0
    assert llama.tier is None


def test_zero_quantities_give_no_lines() -> None:
    prices = [price("p")]
    assert rate(INPUT_TOKENS, [group({}, seg(OCT, NOV, 0, count=3))], prices) == []
    assert rate(API_CALLS, [group({}, seg(OCT, NOV, 5, count=0))], []) == []
    assert rate(INPUT_TOKENS, [], prices) == []


def test_count_meter_bills_the_count() -> None:
    prices = [price("calls", API_CALLS, unit_amount=Decimal("0.01"), per_units=Decimal(1))]
    lines = rate(API_CALLS, [group({}, seg(OCT, NOV, total=999, count=42))], prices)
    assert [(line.quantity, str(line.amount)) for line in lines] == [(Decimal(42), "0.42")]


def test_last_meter_bills_the_latest_value_at_its_price() -> None:
    prices = [
        price(
            "seat-old", SEATS, unit_amount=Decimal(10), per_units=Decimal(1), effective_to=OCT_15
        ),
        price(
            "seat-new", SEATS, unit_amount=Decimal(12), per_units=Decimal(1), effective_from=OCT_15
        ),
    ]
    segments = [
        seg(OCT, OCT_15, total=30, count=3, last="10", last_at=OCT_10),
        seg(OCT_15, NOV, total=14, count=2, last="7", last_at=OCT_20),
    ]
    for ordered in (segments, segments[::-1]):
        lines = rate(SEATS, [group({}, *ordered)], prices)
        assert [
            (line.price_id, line.quantity, str(line.amount), line.period_start, line.period_end)
            for line in lines
        ] == [("seat-new", Decimal(7), "84.00", OCT, NOV)]
    # a group whose last value came before the change keeps the old price
    early = rate(SEATS, [group({}, segments[0])], prices)
    assert [(line.price_id, str(line.amount)) for line in early] == [("seat-old", "100.00")]


def test_last_meter_sums_the_groups_last_values() -> None:
    prices = [price("seat", SEATS, unit_amount=Decimal(10), per_units=Decimal(1))]
    groups = [
        group({"project_id": "a"}, seg(OCT, NOV, last="3", last_at=OCT_10, count=1, total=3)),
        group({"project_id": "b"}, seg(OCT, NOV, last="4", last_at=OCT_20, count=1, total=4)),
    ]
    lines = rate(SEATS, groups, prices)
    assert [(line.quantity, str(line.amount)) for line in lines] == [(Decimal(7), "70.00")]


def test_tiers_continue_across_a_price_change_with_the_same_bounds() -> None:
    tiers_new = (
        Tier(Decimal(1000), Decimal(0)),
        Tier(Decimal(10000), Decimal("0.003")),
        Tier(None, Decimal("0.002")),
    )
    prices = [
        price("api-old", API_CALLS, per_units=Decimal(1), tiers=API_TIERS, effective_to=OCT_15),
        price("api-new", API_CALLS, per_units=Decimal(1), tiers=tiers_new, effective_from=OCT_15),
    ]
    usage = group({}, seg(OCT, OCT_15, count=6000), seg(OCT_15, NOV, count=6000))
    lines = rate(API_CALLS, [usage], prices)
    # old: 1,000 free, 5,000 x 0.002 = 10.00; new continues at 6,000:
    # 4,000 x 0.003 = 12.00, 2,000 x 0.002 = 4.00
    assert [(line.price_id, tier_rows(line), str(line.amount)) for line in lines] == [
        ("api-old", [(1, 1000, "0"), (2, 5000, "10.000")], "10.00"),
        ("api-new", [(2, 4000, "12.000"), (3, 2000, "4.000")], "16.00"),
    ]
    assert invoice_totals(lines, "USD")[1] == Decimal("26.00")


def test_tiers_restart_when_the_bounds_change() -> None:
    other_bounds = (Tier(Decimal(500), Decimal(0)), Tier(None, Decimal("0.001")))
    prices = [
        price("api-old", API_CALLS, per_units=Decimal(1), tiers=API_TIERS, effective_to=OCT_15),
        price(
            "api-new", API_CALLS, per_units=Decimal(1), tiers=other_bounds, effective_from=OCT_15
        ),
    ]
    usage = group({}, seg(OCT, OCT_15, count=6000), seg(OCT_15, NOV, count=1500))
    lines = rate(API_CALLS, [usage], prices)
    assert [(line.price_id, tier_rows(line), str(line.amount)) for line in lines] == [
        ("api-old", [(1, 1000, "0"), (2, 5000, "10.000")], "10.00"),
        ("api-new", [(1, 500, "0"), (2, 1000, "1.000")], "1.00"),
    ]


def test_tiers_count_all_groups_of_the_price_together() -> None:
    prices = [price("api", API_CALLS, per_units=Decimal(1), tiers=API_TIERS)]
    groups = [
        group({"project_id": "a"}, seg(OCT, NOV, count=800)),
        group({"project_id": "b"}, seg(OCT, NOV, count=800)),
    ]
    [line] = rate(API_CALLS, groups, prices)
    # 1,600 together: 1,000 free + 600 x 0.002 = 1.20 (two free tiers would bill 0.00)
    assert tier_rows(line) == [(1, 1000, "0"), (2, 600, "1.200")]
    assert str(line.amount) == "1.20"


def test_prices_of_other_meters_and_tenants_are_ignored() -> None:
    prices = [
        price(
            "output",
            meter=replace(INPUT_TOKENS, event_name="output_tokens"),
            unit_amount=Decimal(10),
        ),
        price("globex", tenant_id="globex", unit_amount=Decimal(1)),
    ]
    lines = rate(INPUT_TOKENS, [group({}, seg(OCT, NOV, 1_000_000))], prices)
    assert [(line.unpriced, str(line.amount)) for line in lines] == [(True, "0.00")]


def test_currency_mismatch_and_bad_meter_are_refused() -> None:
    eur = price("eur", replace(INPUT_TOKENS, currency="EUR"))
    with pytest.raises(ValueError, match="is in EUR"):
        rate(INPUT_TOKENS, [group({}, seg(OCT, NOV, 1))], [eur])
    with pytest.raises(ValueError, match="aggregation"):
        rate(replace(INPUT_TOKENS, aggregation="avg"), [], [])
    with pytest.raises(ValueError, match="unknown currency"):
        rate(replace(INPUT_TOKENS, currency="XXX"), [], [])


def test_line_order_is_deterministic() -> None:
    prices = [
        price("gpt4o", match={"model": "gpt-4o"}),
        price("mini", match={"model": "gpt-4o-mini"}, effective_to=OCT_15),
        price("mini2", match={"model": "gpt-4o-mini"}, effective_from=OCT_15),
    ]
    groups = [
        group(
            {"model": model, "region": region}, seg(OCT, OCT_15, 1000 + i), seg(OCT_15, NOV, 10 + i)
        )
        for i, (model, region) in enumerate(
            [
                ("gpt-4o", "eu"),
                ("gpt-4o-mini", "us"),
                ("llama", "eu"),
                ("gpt-4o", "us"),
                ("aaa", None),
            ]
        )
    ]
    expected = rate(INPUT_TOKENS, groups, prices)
    assert [(line.match.get("model"), line.price_id) for line in expected] == [
        ("aaa", None),
        ("gpt-4o", "gpt4o"),
        ("gpt-4o-mini", "mini"),
        ("gpt-4o-mini", "mini2"),
        ("llama", None),
    ]
    for seed in range(5):
        shuffled = list(groups)
        random.Random(seed).shuffle(shuffled)
        assert rate(INPUT_TOKENS, shuffled, prices) == expected


# --- totals ----------------------------------------------------------------------------------


def test_invoice_totals_add_up_the_rounded_lines() -> None:
    prices = [
        price("gpt4o", match={"model": "gpt-4o"}),
        price("mini", match={"model": "mini"}, unit_amount=Decimal("0.15")),
    ]
    groups = [
        group({"model": "gpt-4o"}, seg(OCT, NOV, 1_234_567)),  # 3.0864175 -> 3.09
        group({"model": "mini"}, seg(OCT, NOV, 33_333_333)),  # 4.99999995 -> 5.00
    ]
    lines = rate(INPUT_TOKENS, groups, prices)
    assert amounts(lines) == ["3.09", "5.00"]
    subtotal, total = invoice_totals(lines, "USD")
    assert str(subtotal) == "8.09"  # 3.09 + 5.00
    assert total == subtotal
    assert str(invoice_totals([], "USD")[0]) == "0.00"


def test_invoice_totals_refuse_unrounded_lines() -> None:
    line = rate(INPUT_TOKENS, [group({}, seg(OCT, NOV, 1_000_000))], [price("p")])[0]
    with pytest.raises(ValueError, match="minor units"):
        invoice_totals([replace(line, amount=Decimal("2.505"))], "USD")


def test_totals_are_sums_of_rounded_lines_not_rounded_sums() -> None:
    # three lines of 0.005005 each: each rounds to 0.01, total 0.03 (the exact sum is 0.015015)
    prices = [price(f"p{i}", match={"model": f"m{i}"}) for i in range(3)]
    groups = [group({"model": f"m{i}"}, seg(OCT, NOV, 2_002)) for i in range(3)]
    lines = rate(INPUT_TOKENS, groups, prices)
    assert amounts(lines) == ["0.01", "0.01", "0.01"]
    assert invoice_totals(lines, "USD") == (Decimal("0.03"), Decimal("0.03"))


# --- adjustments -----------------------------------------------------------------------------


def test_late_usage_becomes_an_adjustment_line() -> None:
    prices = [price("gpt4o", match={"model": "gpt-4o"})]
    billed = rate(INPUT_TOKENS, [group({"model": "gpt-4o"}, seg(OCT, NOV, 1_000_000))], prices)
    current = rate(INPUT_TOKENS, [group({"model": "gpt-4o"}, seg(OCT, NOV, 1_234_567))], prices)
    assert amounts(billed) == ["2.50"]
    adjustments = adjustment_lines(current, billed, period_label="2026-10")
    assert adjustments == [
        InvoiceLine(
            kind="adjustment",
            adjusts_kind="usage",
            meter="input_tokens",
            description="Adjustment for 2026-10: Input tokens — model=gpt-4o (per 1000000 tokens)",
            match={"model": "gpt-4o"},
            price_id="gpt4o",
            period_start=OCT,
            period_end=NOV,
            quantity=Decimal(234_567),
            unit_amount=Decimal("2.50"),
            per_units=Decimal(1_000_000),
            amount=Decimal("0.59"),  # 3.09 billed now - 2.50 billed before
            tier=None,
            unpriced=False,
            adjusts_period="2026-10",
        )
    ]
    # nothing new: nothing to adjust
    assert adjustment_lines(billed, billed, period_label="2026-10") == []
    # earlier adjustments count as billed
    assert adjustment_lines(current, [*billed, *adjustments], period_label="2026-10") == []


def test_adjustment_for_tiers_and_for_a_new_identity() -> None:
    prices = [
        price("api", API_CALLS, per_units=Decimal(1), tiers=API_TIERS),
        price(
            "api-x",
            API_CALLS,
            per_units=Decimal(1),
            unit_amount=Decimal("0.01"),
            match={"model": "x"},
        ),
    ]
    billed = rate(API_CALLS, [group({}, seg(OCT, NOV, count=9_000))], prices)
    # billed: 1,000 free + 8,000 x 0.002 = 16.00
    assert amounts(billed) == ["16.00"]
    current = rate(
        API_CALLS,
        [group({}, seg(OCT, NOV, count=12_005)), group({"model": "x"}, seg(OCT, NOV, count=5))],
        prices,
    )
    # now: 1,000 free + 9,000 x 0.002 = 18.00 + 2,005 x 0.001 = 2.005, once: 20.005 -> 20.01;
    # and 5 x 0.01
    adjustments = adjustment_lines(current, billed, period_label="2026-10")
    assert [
        (line.price_id, line.tier, line.quantity, str(line.amount), line.description)
        for line in adjustments
    ] == [
        # The tiered price is one line, whichever tier it reaches.
        (
            "api",
            3,
            Decimal(3005),
            "4.01",
            "Adjustment for 2026-10: API calls — graduated tiers",
        ),
        ("api-x", None, Decimal(5), "0.05", "Adjustment for 2026-10: API calls — model=x"),
    ]
    assert all(line.adjusts_period == "2026-10" for line in adjustments)
    assert all(line.kind == "adjustment" for line in adjustments)
    assert adjustments[0].unit_amount == Decimal("0.001")  # the highest tier's, now
    # on paper: what was billed plus the adjustments is what the period costs now
    assert (
        invoice_totals(billed, "USD")[1] + invoice_totals(adjustments, "USD")[1]
        == (invoice_totals(current, "USD")[1])
    )


def test_adjustment_for_usage_that_moved_away_and_an_unpriced_line() -> None:
    billed = [
        *rate(LOCAL_TOKENS, [group({"model": "llama"}, seg(OCT, NOV, 100))], []),
        *rate(INPUT_TOKENS, [group({}, seg(OCT, NOV, 1_000_000))], [price("p")]),
    ]
    current = rate(LOCAL_TOKENS, [group({"model": "llama"}, seg(OCT, NOV, 150))], [])
    adjustments = adjustment_lines(current, billed, period_label="2026-10")
    assert [
        (line.meter, line.unpriced, line.quantity, str(line.amount), line.description)
        for line in adjustments
    ] == [
        (
            "input_tokens",
            False,
            Decimal(-1_000_000),
            "-2.50",
            "Adjustment for 2026-10: Input tokens (per 1000000 tokens)",
        ),
        (
            "local_tokens",
            True,
            Decimal(50),
            "0.00",
            "Adjustment for 2026-10: Local tokens — model=llama (unpriced)",
        ),
    ]


def test_adjustment_prefix_is_not_repeated() -> None:
    line = rate(INPUT_TOKENS, [group({}, seg(OCT, NOV, 1_000_000))], [price("p")])[0]
    earlier = replace(line, description="Adjustment for 2026-10: " + line.description)
    adjustments = adjustment_lines([], [earlier], period_label="2026-10")
    assert [a.description for a in adjustments] == [
        "Adjustment for 2026-10: Input tokens (per 1000000 tokens)"
    ]


# --- properties ------------------------------------------------------------------------------

CURRENCIES = ["JPY", "USD", "KWD"]


def decimals(max_places: int, max_value: int) -> st.SearchStrategy[Decimal]:
    return st.integers(min_value=0, max_value=max_places).flatmap(
        lambda places: st.decimals(
            min_value=Decimal(0),
            max_value=Decimal(max_value),
            places=places,
            allow_nan=False,
            allow_infinity=False,
        )
    )


unit_amounts = decimals(12, 1000)
quantities = decimals(6, 10**9)
per_units_values = st.sampled_from(
    [Decimal(1), Decimal(3), Decimal(7), Decimal(1000), Decimal("1E+6")]
)


def exact_amount(line: InvoiceLine) -> Fraction:
    if line.tiers:
        return sum(
            (
                Fraction(share.quantity) * Fraction(share.unit_amount) / Fraction(line.per_units)
                + Fraction(share.flat_amount)
                for share in line.tiers
            ),
            Fraction(0),
        )
    return Fraction(line.quantity) * Fraction(line.unit_amount) / Fraction(line.per_units)


def assert_well_rounded(lines: Sequence[InvoiceLine], currency: str) -> None:
    exponent = currency_exponent(currency)
    for line in lines:
        assert line.amount.as_tuple().exponent == -exponent
        assert abs(Fraction(line.amount) - exact_amount(line)) <= Fraction(1, 2 * 10**exponent)
    subtotal, total = invoice_totals(lines, currency)
    assert subtotal == total == sum((line.amount for line in lines), Decimal(0))
    assert subtotal.as_tuple().exponent == -exponent


@settings(max_examples=200, deadline=None)
@given(
    currency=st.sampled_from(CURRENCIES),
    unit_amount_values=st.lists(unit_amounts, min_size=1, max_size=4),
    per_units=per_units_values,
    usage=st.lists(quantities, min_size=1, max_size=4),
)
def test_each_line_is_within_half_a_minor_unit_and_totals_add_up(
    currency: str,
    unit_amount_values: list[Decimal],
    per_units: Decimal,
    usage: list[Decimal],
) -> None:
    meter = MeterInfo("m", "M", "units", "sum", currency)
    prices = [
        price(f"p{i}", meter, unit_amount=amount, per_units=per_units, match={"k": str(i)})
        for i, amount in enumerate(unit_amount_values)
    ]
    groups = [
        group({"k": str(i % (len(prices) + 1))}, seg(OCT, NOV, str(quantity)))
        for i, quantity in enumerate(usage)
    ]
    lines = rate(meter, groups, prices)
    assert_well_rounded(lines, currency)
    assert sum(line.quantity for line in lines) == sum(q for q in usage)


@st.composite
def tier_structures(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(set(draw(st.lists(decimals(3, 10**6).filter(lambda d: d > 0), max_size=4))))
    amounts_ = draw(st.lists(unit_amounts, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    ups: list[Decimal | None] = [*bounds, None]
    return tuple(Tier(up, amount) for up, amount in zip(ups, amounts_, strict=True))


@settings(max_examples=200, deadline=None)
@given(
    currency=st.sampled_from(CURRENCIES),
    tiers=tier_structures(),
    per_units=per_units_values,
    quantity=quantities,
)
def test_a_tiered_line_splits_the_quantity_exactly(
    currency: str, tiers: tuple[Tier, ...], per_units: Decimal, quantity: Decimal
) -> None:
    meter = MeterInfo("m", "M", "units", "sum", currency)
    prices = [price("tiered", meter, per_units=per_units, tiers=tiers)]
    lines = rate(meter, [group({}, seg(OCT, NOV, str(quantity)))], prices)
    assert_well_rounded(lines, currency)
    if quantity == 0:
        assert lines == []
        return
    [line] = lines
    assert line.quantity == quantity
    assert sum((share.quantity for share in line.tiers), Decimal(0)) == quantity
    used = [share.tier for share in line.tiers]
    assert used == list(range(1, len(used) + 1))
    assert all(share.quantity > 0 for share in line.tiers)
    assert line.tier == used[-1] and line.unit_amount == tiers[used[-1] - 1].unit_amount
    for share in line.tiers:
        tier = tiers[share.tier - 1]
        assert share.unit_amount == tier.unit_amount
        lower = Decimal(0) if share.tier == 1 else tiers[share.tier - 2].up_to
        assert lower is not None
        if share is not line.tiers[-1]:
            # every tier before the last one used is full
            assert tier.up_to is not None
            assert share.quantity == tier.up_to - lower
        else:
            assert tier.up_to is None or quantity <= tier.up_to


@settings(max_examples=200, deadline=None)
@given(tiers=tier_structures(), first=quantities, second=quantities)
def test_tiers_continue_across_a_price_change(
    tiers: tuple[Tier, ...], first: Decimal, second: Decimal
) -> None:
    one_price = [price("only", per_units=Decimal(1), tiers=tiers)]
    changed = [
        price("before", per_units=Decimal(1), tiers=tiers, effective_to=OCT_15),
        price("after", per_units=Decimal(1), tiers=tiers, effective_from=OCT_15),
    ]
    usage = [group({}, seg(OCT, OCT_15, str(first)), seg(OCT_15, NOV, str(second)))]

    def by_tier(lines: list[InvoiceLine]) -> dict[int, Decimal]:
        quantities_: dict[int, Decimal] = {}
        for line in lines:
            for share in line.tiers:
                quantities_[share.tier] = quantities_.get(share.tier, Decimal(0)) + share.quantity
        return quantities_

    assert by_tier(rate(INPUT_TOKENS, usage, changed)) == by_tier(
        rate(INPUT_TOKENS, usage, one_price)
    )


@st.composite
def priced_usage(draw: st.DrawFn) -> tuple[list[PriceRule], list[GroupUsage]]:
    """Conflict-free prices on the `model` key with random dates, and usage split at their
    boundaries the way the invoice service splits it."""
    day = timedelta(days=1)
    rules: list[PriceRule] = []
    for index in range(draw(st.integers(min_value=0, max_value=8))):
        start = draw(st.integers(min_value=-10, max_value=40))
        length = draw(st.none() | st.integers(min_value=1, max_value=40))
        model = draw(st.none() | st.sampled_from(["a", "b"]))
        rule = price(
            f"p{index}",
            unit_amount=draw(unit_amounts),
            per_units=draw(per_units_values),
            match={} if model is None else {"model": model},
            tenant_id=draw(st.sampled_from([None, "acme"])),
            effective_from=OCT + start * day,
            effective_to=None if length is None else OCT + (start + length) * day,
        )
        if not any(prices_conflict(rule, other) for other in rules):
            rules.append(rule)
    cuts = [OCT, *price_boundaries(rules, OCT, NOV), NOV]
    groups: list[GroupUsage] = []
    for model in ["a", "b", "c"]:
        segments = [
            seg(start, end, str(draw(quantities)))
            for start, end in pairwise(cuts)
            if draw(st.booleans())
        ]
        groups.append(group({"model": model}, *segments))
    return rules, groups


@settings(max_examples=200, deadline=None)
@given(case=priced_usage())
def test_rating_loses_no_usage_and_prices_it_as_resolved(
    case: tuple[list[PriceRule], list[GroupUsage]],
) -> None:
    prices, groups = case
    lines = rate(INPUT_TOKENS, groups, prices)
    assert_well_rounded(lines, "USD")
    total_usage = sum((segment.sum for usage in groups for segment in usage.segments), Decimal(0))
    assert sum((line.quantity for line in lines), Decimal(0)) == total_usage
    # each line's quantity is exactly the usage that resolves to its price
    expected: dict[str | None, Decimal] = {}
    for usage in groups:
        for segment in usage.segments:
            if segment.sum == 0:
                continue
            found = resolve_price(
                prices, tenant_id="acme", attributes=usage.attributes, at=segment.start
            )
            key = None if found is None else found.id
            expected[key] = expected.get(key, Decimal(0)) + segment.sum
    got: dict[str | None, Decimal] = {}
    for line in lines:
        got[line.price_id] = got.get(line.price_id, Decimal(0)) + line.quantity
        if line.price_id is not None:
            rule = next(p for p in prices if p.id == line.price_id)
            assert rule.effective_from <= line.period_start < line.period_end
            assert rule.effective_to is None or line.period_end <= rule.effective_to
            assert line.unit_amount == rule.unit_amount
    assert got == expected
