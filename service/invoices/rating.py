"""Rating: turning a period's usage of one meter into invoice lines, as pure functions.

The invoice service reads usage from rollups, grouped by the attribute values the meter's
prices match on and split into segments at `price_boundaries`, and passes it here together
with the meter's prices. Everything below is exact `Decimal` arithmetic in `MONEY_CONTEXT`;
each line amount is rounded once, half-up, to the currency's minor units, and invoice totals
are plain sums of those rounded amounts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext

from service.common.money import MONEY_CONTEXT, currency_exponent, round_money, to_plain_string
from service.meters.pricing import PriceRule, Rate, Tier, price_boundaries, resolve_rate

AGGREGATIONS = ("sum", "count", "last")

_ADJUSTMENT_PREFIX = re.compile(r"^Adjustment for [^:]*: ")


@dataclass(frozen=True, slots=True)
class SegmentUsage:
    """Usage of one attribute group within one segment `[start, end)` of the period."""

    start: datetime
    end: datetime
    sum: Decimal
    count: int
    last: Decimal | None = None  # value of the latest event in the segment
    last_at: datetime | None = None  # and its event time


@dataclass(frozen=True, slots=True)
class GroupUsage:
    """Usage of one combination of attribute values over the period."""

    attributes: Mapping[str, str | None]  # values of the keys any of the meter's prices match on
    segments: tuple[SegmentUsage, ...]  # the period split at price boundaries; may omit empty ones


@dataclass(frozen=True, slots=True)
class MeterInfo:
    event_name: str
    name: str
    unit: str | None
    aggregation: str  # "sum" | "count" | "last"
    currency: str


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    meter: str
    description: str
    match: Mapping[str, str]  # the price's match; for unpriced usage, the group's attributes
    price_id: str | None  # None when unpriced
    period_start: datetime
    period_end: datetime
    quantity: Decimal
    unit_amount: Decimal  # for a tier line, the tier's unit amount; 0 when unpriced
    per_units: Decimal
    amount: Decimal  # rounded once to the currency's minor units, half-up
    tier: int | None  # 1-based tier index for graduated prices, else None
    unpriced: bool
    adjusts_period: str | None = None  # "2026-10" on a prior-period adjustment line


@dataclass(slots=True)
class _PricedUsage:
    rate: Rate
    quantity: Decimal


@dataclass(slots=True)
class _UnpricedUsage:
    match: dict[str, str]
    quantity: Decimal
    start: datetime
    end: datetime


@dataclass(slots=True)
class RatedUsage:
    """Usage of one meter for the period, merged per rate (`Rate.key`) and per unpriced
    attribute set."""

    # By price and, for a relative price, the prices its rate came from.
    priced: dict[tuple[str, ...], _PricedUsage] = field(default_factory=dict)
    unpriced: dict[tuple[tuple[str, str], ...], _UnpricedUsage] = field(default_factory=dict)

    def add(
        self,
        rate: Rate | None,
        attributes: Mapping[str, str | None],
        quantity: Decimal,
        start: datetime,
        end: datetime,
    ) -> None:
        if rate is not None:
            entry = self.priced.setdefault(rate.key, _PricedUsage(rate, Decimal(0)))
            entry.quantity += quantity
            return
        match = {key: value for key, value in attributes.items() if value is not None}
        key = tuple(sorted(match.items()))
        unpriced = self.unpriced.get(key)
        if unpriced is None:
            self.unpriced[key] = _UnpricedUsage(match, quantity, start, end)
        else:
            unpriced.quantity += quantity
            unpriced.start = min(unpriced.start, start)
            unpriced.end = max(unpriced.end, end)


def rate_meter(
    meter: MeterInfo,
    groups: Sequence[GroupUsage],
    prices: Sequence[PriceRule],
    *,
    tenant_id: str,
    period_start: datetime,
    period_end: datetime,
) -> list[InvoiceLine]:
    """Invoice lines for one meter's usage by `tenant_id` over `[period_start, period_end)`.

    Quantity: `sum` meters bill the segments' sums, `count` meters their counts. Each segment
    of each group is priced by `resolve_price` at the segment start with the group's
    attributes; a boundary of a price that could apply to the group must not fall inside a
    segment (ValueError: split the period with `price_boundaries`). `last` meters are not
    split: each group bills its latest value of the period, priced at that value's time.

    Lines: usage resolving to the same price is merged into one line, quantities added, over
    all groups and segments. A price change is a new price (a new id), so a change inside the
    period splits the usage at the change; a priced line covers the part of the period in
    which its price is effective (the whole period for `last` meters). Usage with no
    applicable price gives an unpriced line (amount 0) per distinct set of non-null attribute
    values, covering the segments that had such usage. Zero quantities give no line.

    Amount: quantity x unit_amount / per_units, exact, rounded once to the meter's currency.

    Relative prices: `prices` may also hold the prices of the meters that relative prices
    refer to (directly or through further relative prices); usage is priced by `resolve_rate`.
    Its line shows the resolved unit amount, and usage priced through different referenced
    prices (another tenant override, a price change) gets separate lines. Usage whose
    relative price finds nothing to refer to is unpriced.

    Graduated tiers: tiers count the quantity of the whole period. A price's tiers are filled
    by its total quantity for the period. Prices form a chain when they have the same tenant,
    the same match and the same tier bounds (`up_to` values) - a price change that keeps the
    tier structure; within a chain, prices are taken in `effective_from` order and each
    continues filling tiers where the previous one stopped, at its own unit amounts. So the
    tier a unit lands in depends only on the chain's earlier usage in the period, not on
    whether the price changed. A price with other bounds starts again from zero. Each tier a
    line reaches gives its own line (`tier` = 1-based index), amount rounded once per tier.
    """
    rated = rate_usage(
        meter,
        groups,
        prices,
        tenant_id=tenant_id,
        period_start=period_start,
        period_end=period_end,
    )
    with localcontext(MONEY_CONTEXT):
        lines = _priced_lines(meter, period_charges(rated), period_start, period_end)
        for unpriced in rated.unpriced.values():
            if unpriced.quantity == 0:
                continue
            lines.append(
                InvoiceLine(
                    meter=meter.event_name,
                    description=_describe(meter, unpriced.match, unpriced=True),
                    match=unpriced.match,
                    price_id=None,
                    period_start=unpriced.start,
                    period_end=unpriced.end,
                    quantity=unpriced.quantity,
                    unit_amount=Decimal(0),
                    per_units=Decimal(1),
                    amount=round_money(Decimal(0), meter.currency),
                    tier=None,
                    unpriced=True,
                )
            )
    return sorted(lines, key=_line_order)


def rate_usage(
    meter: MeterInfo,
    groups: Sequence[GroupUsage],
    prices: Sequence[PriceRule],
    *,
    tenant_id: str,
    period_start: datetime,
    period_end: datetime,
) -> RatedUsage:
    """The meter's usage over the period merged per rate, as `rate_meter` bills it (its rules
    and its ValueErrors); `period_charges` then says what each rate's usage costs."""
    if not period_start < period_end:
        raise ValueError("period_start must be before period_end")
    if meter.aggregation not in AGGREGATIONS:
        raise ValueError(
            f"meter {meter.event_name!r}: unknown aggregation {meter.aggregation!r};"
            f" expected one of {', '.join(AGGREGATIONS)}"
        )
    currency_exponent(meter.currency)  # an unknown currency fails here, before any arithmetic
    # The meter's own prices and those of the meters relative prices refer to.
    meter_prices = [
        price for price in prices if price.tenant_id is None or price.tenant_id == tenant_id
    ]
    for price in meter_prices:
        if price.currency != meter.currency:
            raise ValueError(
                f"price {price.id!r} is in {price.currency} but meter {meter.event_name!r}"
                f" bills in {meter.currency}"
            )

    with localcontext(MONEY_CONTEXT):
        rated = RatedUsage()
        for group in groups:
            if meter.aggregation == "last":
                _add_last_usage(
                    rated, meter, group, meter_prices, tenant_id, period_start, period_end
                )
            else:
                _add_segment_usage(
                    rated, meter, group, meter_prices, tenant_id, period_start, period_end
                )
    return rated


def _check_segment(segment: SegmentUsage, period_start: datetime, period_end: datetime) -> None:
    if not period_start <= segment.start < segment.end <= period_end:
        raise ValueError(
            f"usage segment [{segment.start.isoformat()}, {segment.end.isoformat()}) is empty"
            f" or lies outside the period [{period_start.isoformat()}, {period_end.isoformat()})"
        )


def _add_segment_usage(
    rated: RatedUsage,
    meter: MeterInfo,
    group: GroupUsage,
    prices: Sequence[PriceRule],
    tenant_id: str,
    period_start: datetime,
    period_end: datetime,
) -> None:
    # Prices that could price this group at some instant; their boundaries must not cut a
    # segment, or pricing at the segment start would bill part of it at the wrong price.
    candidates = [
        price
        for price in prices
        if all(group.attributes.get(key) == value for key, value in price.match.items())
    ]
    for segment in group.segments:
        _check_segment(segment, period_start, period_end)
        inside = price_boundaries(candidates, segment.start, segment.end)
        if inside:
            raise ValueError(
                f"usage segment [{segment.start.isoformat()}, {segment.end.isoformat()}) spans"
                f" a price change at {inside[0].isoformat()}; split the period at"
                " price_boundaries() before rating"
            )
        quantity = segment.sum if meter.aggregation == "sum" else Decimal(segment.count)
        if quantity == 0:
            continue
        rate = resolve_rate(
            candidates,
            meter=meter.event_name,
            tenant_id=tenant_id,
            attributes=group.attributes,
            at=segment.start,
        )
        rated.add(rate, group.attributes, quantity, segment.start, segment.end)


def _add_last_usage(
    rated: RatedUsage,
    meter: MeterInfo,
    group: GroupUsage,
    prices: Sequence[PriceRule],
    tenant_id: str,
    period_start: datetime,
    period_end: datetime,
) -> None:
    latest: SegmentUsage | None = None
    for segment in group.segments:
        _check_segment(segment, period_start, period_end)
        if segment.last is None or segment.last_at is None:
            continue
        if not segment.start <= segment.last_at < segment.end:
            raise ValueError(
                f"last_at {segment.last_at.isoformat()} lies outside its segment"
                f" [{segment.start.isoformat()}, {segment.end.isoformat()})"
            )
        if latest is None or latest.last_at is None or segment.last_at > latest.last_at:
            latest = segment
    if latest is None or latest.last is None or latest.last_at is None or latest.last == 0:
        return
    rate = resolve_rate(
        prices,
        meter=meter.event_name,
        tenant_id=tenant_id,
        attributes=group.attributes,
        at=latest.last_at,
    )
    rated.add(rate, group.attributes, latest.last, period_start, period_end)


def _fill_tiers(tiers: Sequence[Tier], offset: Decimal, quantity: Decimal) -> list[Decimal]:
    """The share of `(offset, offset + quantity]` that falls in each tier."""
    top = offset + quantity
    shares: list[Decimal] = []
    lower = Decimal(0)
    for tier in tiers:
        upper = tier.up_to
        from_ = max(lower, offset)
        to = top if upper is None else min(upper, top)
        shares.append(max(to - from_, Decimal(0)))
        if upper is None:
            break
        lower = upper
    return shares


@dataclass(frozen=True, slots=True)
class ChargePart:
    """A part of what one rate's usage costs over the period: the whole quantity of a price
    without tiers, or the quantity that falls in one tier (`tier`, 1-based). One invoice line
    each."""

    tier: int | None
    quantity: Decimal
    unit_amount: Decimal  # per the rate's per_units: the price's, or the tier's
    amount: Decimal  # exact: not rounded


@dataclass(frozen=True, slots=True)
class PeriodCharge:
    """What the usage one rate prices costs over the whole period, exactly."""

    rate: Rate
    quantity: Decimal
    parts: tuple[ChargePart, ...]

    @property
    def amount(self) -> Decimal:
        with localcontext(MONEY_CONTEXT):
            return sum((part.amount for part in self.parts), Decimal(0))


def period_charges(rated: RatedUsage) -> list[PeriodCharge]:
    """The amount of each rate's quantity for the period, exact: the one amount function of
    the service. Invoice lines round its parts; costs share each charge among the groups and
    windows whose usage it prices, in proportion to quantity, so they add up to it.

    Untiered: quantity x unit_amount / per_units. Graduated: the tiers of a chain (see
    `rate_meter`) are filled in `effective_from` order, each rate where the previous stopped.
    Zero quantities give no charge."""
    charges: list[PeriodCharge] = []
    chains: dict[tuple[object, ...], list[_PricedUsage]] = {}
    with localcontext(MONEY_CONTEXT):
        for usage in rated.priced.values():
            price = usage.rate.price
            if usage.quantity == 0:
                continue
            if price.tiers:
                if usage.quantity < 0:
                    raise ValueError(
                        f"price {price.id!r}: a negative quantity ({usage.quantity}) cannot be"
                        " rated against graduated tiers"
                    )
                chain_key = (
                    price.tenant_id,
                    tuple(sorted(price.match.items())),
                    tuple(tier.up_to for tier in price.tiers),
                )
                chains.setdefault(chain_key, []).append(usage)
                continue
            rate = usage.rate
            amount = usage.quantity * rate.unit_amount / rate.per_units
            part = ChargePart(None, usage.quantity, rate.unit_amount, amount)
            charges.append(PeriodCharge(rate, usage.quantity, (part,)))
        for chain in chains.values():
            offset = Decimal(0)
            for usage in sorted(chain, key=lambda usage: usage.rate.price.effective_from):
                price = usage.rate.price
                shares = _fill_tiers(price.tiers, offset, usage.quantity)
                parts = tuple(
                    ChargePart(
                        index + 1,
                        share,
                        tier.unit_amount,
                        share * tier.unit_amount / usage.rate.per_units,
                    )
                    for index, (tier, share) in enumerate(zip(price.tiers, shares, strict=True))
                    if share != 0
                )
                charges.append(PeriodCharge(usage.rate, usage.quantity, parts))
                offset += usage.quantity
    return charges


def _priced_lines(
    meter: MeterInfo,
    charges: Sequence[PeriodCharge],
    period_start: datetime,
    period_end: datetime,
) -> list[InvoiceLine]:
    """One line per part of each charge, its amount rounded once."""
    return [
        _price_line(
            meter,
            charge.rate,
            quantity=part.quantity,
            unit_amount=part.unit_amount,
            amount=round_money(part.amount, meter.currency),
            tier=part.tier,
            period_start=period_start,
            period_end=period_end,
        )
        for charge in charges
        for part in charge.parts
    ]


def _price_line(
    meter: MeterInfo,
    rate: Rate,
    *,
    quantity: Decimal,
    unit_amount: Decimal,
    amount: Decimal,
    tier: int | None,
    period_start: datetime,
    period_end: datetime,
) -> InvoiceLine:
    price = rate.price
    if meter.aggregation == "last":
        start, end = period_start, period_end
    else:
        start = max(period_start, rate.effective_from)
        end = period_end if rate.effective_to is None else min(period_end, rate.effective_to)
    return InvoiceLine(
        meter=meter.event_name,
        description=_describe(
            meter, price.match, per_units=rate.per_units, tier=tier, relative_to=price
        ),
        match=dict(price.match),
        price_id=price.id,
        period_start=start,
        period_end=end,
        quantity=quantity,
        unit_amount=unit_amount,
        per_units=rate.per_units,
        amount=amount,
        tier=tier,
        unpriced=False,
    )


def _describe(
    meter: MeterInfo,
    match: Mapping[str, str],
    *,
    per_units: Decimal = Decimal(1),
    tier: int | None = None,
    unpriced: bool = False,
    relative_to: PriceRule | None = None,
) -> str:
    """`Input tokens — model=gpt-4o (per 1000000 tokens)`, `API calls — tier 2`,
    `Cache writes — model=gpt-4o — 1.25 times input_tokens (per 1000000 tokens)`."""
    text = meter.name
    if match:
        text += " — " + ", ".join(f"{key}={value}" for key, value in sorted(match.items()))
    if unpriced:
        return text + " (unpriced)"
    if tier is not None:
        text += f" — tier {tier}"
    if relative_to is not None and relative_to.relative_to is not None:
        factor = to_plain_string(relative_to.relative_to.factor.normalize(MONEY_CONTEXT))
        text += f" — {factor} times {relative_to.relative_to.meter}"
    if per_units != 1:
        per = to_plain_string(per_units.normalize(MONEY_CONTEXT))
        text += f" (per {per} {meter.unit or 'units'})"
    return text


def _line_order(line: InvoiceLine) -> tuple[object, ...]:
    return (
        line.meter,
        tuple(sorted(line.match.items())),
        line.period_start,
        line.tier or 0,
        line.unpriced,
        line.price_id or "",
        line.period_end,
        line.unit_amount,
    )


def invoice_totals(lines: Iterable[InvoiceLine], currency: str) -> tuple[Decimal, Decimal]:
    """(subtotal, total): the sum of the lines' rounded amounts, in the currency's minor units.

    No tax yet, so the total equals the subtotal. A line amount that is not already in minor
    units of `currency` is a bug upstream and raises ValueError rather than being re-rounded.
    """
    with localcontext(MONEY_CONTEXT):
        subtotal = Decimal(0)
        for line in lines:
            if round_money(line.amount, currency) != line.amount:
                raise ValueError(
                    f"line {line.description!r} has amount {line.amount}, which is not in"
                    f" minor units of {currency}"
                )
            subtotal += line.amount
        subtotal = round_money(subtotal, currency)
    return subtotal, subtotal


_LineIdentity = tuple[
    str, str | None, tuple[tuple[str, str], ...], int | None, bool, Decimal, Decimal
]


def _identity(line: InvoiceLine) -> _LineIdentity:
    # The unit amount too: a relative price bills at the rate of whichever price it refers
    # to, so one price may give lines at several unit amounts (a price's own amount is fixed).
    return (
        line.meter,
        line.price_id,
        tuple(sorted(line.match.items())),
        line.tier,
        line.unpriced,
        line.unit_amount,
        line.per_units,
    )


def adjustment_lines(
    current: Sequence[InvoiceLine],
    billed: Sequence[InvoiceLine],
    *,
    period_label: str,
) -> list[InvoiceLine]:
    """Prior-period adjustment lines for usage that arrived after a period was invoiced.

    `current` is a fresh rating of the prior period; `billed` is every line already billed for
    it (the finalized invoice's lines and earlier adjustment lines for that period). For each
    line identity (meter, price, match, tier, unpriced, unit amount) the result carries the
    difference in quantity and amount, current minus billed, when either is non-zero; amounts
    are differences of rounded amounts, so no new rounding happens. Each line names the period it
    adjusts (`adjusts_period`, and a description starting "Adjustment for <period>: ").
    """
    order: list[_LineIdentity] = []
    templates: dict[_LineIdentity, InvoiceLine] = {}
    quantity: dict[_LineIdentity, Decimal] = {}
    amount: dict[_LineIdentity, Decimal] = {}
    with localcontext(MONEY_CONTEXT):
        for sign, lines in ((1, current), (-1, billed)):
            for line in lines:
                key = _identity(line)
                if key not in templates:
                    order.append(key)
                    templates[key] = line
                    quantity[key] = Decimal(0)
                    amount[key] = Decimal(0)
                quantity[key] += sign * line.quantity
                amount[key] += sign * line.amount
        adjustments: list[InvoiceLine] = []
        for key in order:
            if quantity[key] == 0 and amount[key] == 0:
                continue
            template = templates[key]
            description = _ADJUSTMENT_PREFIX.sub("", template.description)
            adjustments.append(
                InvoiceLine(
                    meter=template.meter,
                    description=f"Adjustment for {period_label}: {description}",
                    match=dict(template.match),
                    price_id=template.price_id,
                    period_start=template.period_start,
                    period_end=template.period_end,
                    quantity=quantity[key],
                    unit_amount=template.unit_amount,
                    per_units=template.per_units,
                    amount=amount[key].copy_abs() if amount[key].is_zero() else amount[key],
                    tier=template.tier,
                    unpriced=template.unpriced,
                    adjusts_period=period_label,
                )
            )
    return sorted(adjustments, key=_line_order)
