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
from typing import Literal

from service.common.money import MONEY_CONTEXT, currency_exponent, round_money, to_plain_string
from service.meters.pricing import (
    PricedQuantity,
    PriceRule,
    Rate,
    TierShare,
    price_boundaries,
    price_quantity,
    pricing_structure,
    resolve_rate,
)

AGGREGATIONS = ("sum", "count", "last", "max", "unique_count")

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
    max: Decimal | None = None  # max meters: the largest value in the segment
    # unique_count meters: the distinct values of the meter's unique_key in the segment
    distinct: frozenset[str] | None = None


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
    aggregation: str  # "sum" | "count" | "last" | "max" | "unique_count"
    currency: str
    unique_key: str | None = None  # unique_count meters: whose distinct values are counted


LineKind = Literal["usage", "minimum", "charge", "commitment", "adjustment"]


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceLine:
    """One invoice line. `usage`: a meter's usage at one price for the period (all its tiers
    in one line), or usage no price covers (`unpriced`, amount 0); `minimum`: the top-up of
    a price whose period amount is below its `minimum_amount`; `charge`: a recurring charge
    for the period (no meter, `charge_id`, `proration`); `commitment`: the true-up of a
    monthly minimum spend (no meter, `commitment_id`, `minimum_amount` the prorated
    commitment); `adjustment`: a correction of a prior period's line
    (`adjusts_period`, `adjusts_kind`)."""

    kind: LineKind = "usage"
    meter: str | None  # None on a charge line
    description: str
    match: Mapping[str, str]  # the price's match; for unpriced usage, the group's attributes
    price_id: str | None  # None when unpriced
    period_start: datetime
    period_end: datetime
    quantity: Decimal
    # Per per_units; for a tiered price the rate of the highest tier reached; per package for
    # a package price; the top-up on a minimum line; 0 when unpriced.
    unit_amount: Decimal
    per_units: Decimal
    amount: Decimal  # rounded once to the currency's minor units, half-up
    tier: int | None  # 1-based index of the highest tier reached, for tiered prices
    unpriced: bool
    adjusts_period: str | None = None  # "2026-10" on a prior-period adjustment line
    adjusts_kind: LineKind | None = None  # on an adjustment line, the kind of line it corrects
    tiers: tuple[TierShare, ...] = ()  # the tiers the usage entered, in order
    free_units_applied: Decimal | None = None  # for a price with free units
    packages: Decimal | None = None  # whole packages billed, for a package price
    minimum_amount: Decimal | None = None  # on a minimum line
    charge_id: str | None = None  # on a charge line
    commitment_id: str | None = None  # on a commitment line: the period's latest commitment
    # On a charge line: the share of the period the charge was effective in (1 unprorated).
    proration: Decimal | None = None


@dataclass(slots=True)
class _PricedUsage:
    rate: Rate
    quantity: Decimal
    # unique_count meters: the distinct values counted so far (quantity is their number)
    distinct: set[str] | None = None


@dataclass(slots=True)
class _UnpricedUsage:
    match: dict[str, str]
    quantity: Decimal
    start: datetime
    end: datetime
    distinct: set[str] | None = None


def _combine(
    usage: _PricedUsage | _UnpricedUsage, quantity: Decimal, distinct: frozenset[str] | None
) -> None:
    """Adds usage into a rate's (or an unpriced set's): sums and counts add up, maxes keep
    the largest, distinct values are counted once over all of them."""
    if distinct is not None:
        if usage.distinct is None:
            usage.distinct = set()
        usage.distinct |= distinct
        usage.quantity = Decimal(len(usage.distinct))
    else:
        usage.quantity += quantity


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
        *,
        largest: bool = False,
        distinct: frozenset[str] | None = None,
    ) -> None:
        """`largest`: the quantity is a max (kept if larger, not added); `distinct`: the
        quantity is the number of these values (counted once across additions)."""
        if rate is not None:
            entry = self.priced.get(rate.key)
            if entry is None:
                entry = self.priced[rate.key] = _PricedUsage(rate, Decimal(0))
                if largest:
                    entry.quantity = quantity
            if largest:
                entry.quantity = max(entry.quantity, quantity)
            else:
                _combine(entry, quantity, distinct)
            return
        match = {key: value for key, value in attributes.items() if value is not None}
        key = tuple(sorted(match.items()))
        unpriced = self.unpriced.get(key)
        if unpriced is None:
            unpriced = self.unpriced[key] = _UnpricedUsage(match, Decimal(0), start, end)
            if largest:
                unpriced.quantity = quantity
        else:
            unpriced.start = min(unpriced.start, start)
            unpriced.end = max(unpriced.end, end)
        if largest:
            unpriced.quantity = max(unpriced.quantity, quantity)
        else:
            _combine(unpriced, quantity, distinct)


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

        Amount: what `price_quantity` gives for the line's quantity (free units, packages, tiers
    with flat amounts, or quantity x unit_amount / per_units), exact, rounded once to the
        meter's currency: one line per price and period, its tiers listed inside it.

        Relative prices: `prices` may also hold the prices of the meters that relative prices
        refer to (directly or through further relative prices); usage is priced by `resolve_rate`.
        Its line shows the resolved unit amount, and usage priced through different referenced
        prices (another tenant override, a price change) gets separate lines. Usage whose
        relative price finds nothing to refer to is unpriced.

        Period rules: free units, packages and tiers count the quantity of the whole period. Prices
        form a chain when they have the same tenant, match and structure (`pricing_structure`:
        tier bounds and mode, free units, package size) - a price change that keeps the structure;
        within a chain, prices are taken in `effective_from` order and each continues where the
        previous one stopped (free units used, packages started, tiers filled, flat amounts
        counted), at its own amounts; volume tiers are chosen by the chain's total. So what a unit
        costs depends only on the chain's usage in the period, not on whether the price changed. A
        price with another structure starts again from zero.

        Minimum: when the chain's quantity is above zero and its lines' rounded amounts add up to
        less than the `minimum_amount` of its last price, a `minimum` line (named after that
        price) bills the difference. Zero usage bills nothing, minimum included.
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
        distinct = None
        if meter.aggregation == "max":
            quantity = segment.max or Decimal(0)
        elif meter.aggregation == "unique_count":
            distinct = segment.distinct or frozenset()
            quantity = Decimal(len(distinct))
        else:
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
        rated.add(
            rate,
            group.attributes,
            quantity,
            segment.start,
            segment.end,
            largest=meter.aggregation == "max",
            distinct=distinct,
        )


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


@dataclass(frozen=True, slots=True)
class PeriodCharge:
    """What the usage one rate prices costs over the whole period, exactly, with the rules that
    applied (`priced`: the tiers entered, free units, packages)."""

    rate: Rate
    quantity: Decimal
    priced: PricedQuantity

    @property
    def amount(self) -> Decimal:
        return self.priced.amount


def period_charges(rated: RatedUsage) -> list[PeriodCharge]:
    """The amount of each rate's quantity for the period, exact: the one amount function of
    the service. Invoice lines round each charge once; costs share each charge among the groups
    and windows whose usage it prices, in proportion to quantity, so they add up to it.

    A relative price: quantity x the rate resolved through the referenced prices. Any other:
    `price_quantity` along its chain (prices of one `pricing_structure`, see `rate_meter`), in
    `effective_from` order, each continuing where the previous one stopped. Zero quantities
    give no charge. A chain's minimum is no charge of its usage: the invoice adds it from the
    rounded lines (`_minimum_line`)."""
    charges: list[PeriodCharge] = []
    chains: dict[tuple[object, ...], list[_PricedUsage]] = {}
    with localcontext(MONEY_CONTEXT):
        for usage in rated.priced.values():
            if usage.quantity == 0:
                continue
            if usage.rate.price.relative_to is not None:
                rate = usage.rate
                amount = usage.quantity * rate.unit_amount / rate.per_units
                priced = PricedQuantity(usage.quantity, Decimal(0), None, (), amount)
                charges.append(PeriodCharge(rate, usage.quantity, priced))
                continue
            chains.setdefault(pricing_structure(usage.rate.price), []).append(usage)
        for chain in chains.values():
            ordered = sorted(chain, key=lambda usage: usage.rate.price.effective_from)
            # A negative quantity (refunds beyond usage) is credited at its price's first
            # rate and takes no part in the chain's tiers: they count the positive usage.
            total = sum((max(usage.quantity, Decimal(0)) for usage in ordered), Decimal(0))
            before = Decimal(0)
            for usage in ordered:
                priced = price_quantity(
                    usage.rate.price, usage.quantity, before=before, total=total
                )
                charges.append(PeriodCharge(usage.rate, usage.quantity, priced))
                before += max(usage.quantity, Decimal(0))
    return charges


def _priced_lines(
    meter: MeterInfo,
    charges: Sequence[PeriodCharge],
    period_start: datetime,
    period_end: datetime,
) -> list[InvoiceLine]:
    """One line per charge, its amount rounded once; then each chain's minimum line when one
    is due."""
    lines: list[InvoiceLine] = []
    chains: dict[tuple[object, ...], list[tuple[PeriodCharge, InvoiceLine]]] = {}
    for charge in charges:
        line = _price_line(
            meter, charge.rate, charge.priced, period_start=period_start, period_end=period_end
        )
        lines.append(line)
        if charge.rate.price.relative_to is None:
            chains.setdefault(pricing_structure(charge.rate.price), []).append((charge, line))
    for chain in chains.values():
        minimum = _minimum_line(meter, chain)
        if minimum is not None:
            lines.append(minimum)
    return lines


def _minimum_line(
    meter: MeterInfo, chain: Sequence[tuple[PeriodCharge, InvoiceLine]]
) -> InvoiceLine | None:
    """The `minimum` line of a chain (its charges in `effective_from` order) whose usage is
    above zero and whose lines' rounded amounts add up to less than the `minimum_amount` of
    its last price."""
    last = chain[-1][0].rate
    minimum = last.price.minimum_amount
    total = sum((charge.quantity for charge, _ in chain), Decimal(0))
    if minimum is None or total <= 0:  # no usage, no minimum
        return None
    lines = [line for _, line in chain]
    billed = sum((line.amount for line in lines), Decimal(0))
    if billed >= minimum:
        return None
    top_up = round_money(minimum - billed, meter.currency)
    return InvoiceLine(
        kind="minimum",
        meter=meter.event_name,
        description="Minimum for " + _describe(meter, last.price.match),
        match=dict(last.price.match),
        price_id=last.price.id,
        period_start=min(line.period_start for line in lines),
        period_end=max(line.period_end for line in lines),
        quantity=Decimal(1),
        unit_amount=top_up,
        per_units=Decimal(1),
        amount=top_up,
        tier=None,
        unpriced=False,
        minimum_amount=minimum,
    )


def _price_line(
    meter: MeterInfo,
    rate: Rate,
    priced: PricedQuantity,
    *,
    period_start: datetime,
    period_end: datetime,
) -> InvoiceLine:
    price = rate.price
    if meter.aggregation == "last":
        start, end = period_start, period_end
    else:
        start = max(period_start, rate.effective_from)
        end = period_end if rate.effective_to is None else min(period_end, rate.effective_to)
    # A tiered line shows the rate of the highest tier its usage reached (for volume pricing,
    # the rate every unit got).
    highest = priced.highest_tier
    if highest is not None:
        unit_amount, tier = highest.unit_amount, highest.tier
    elif price.tiers and rate.basis == ():
        unit_amount, tier = price.tiers[0].unit_amount, None
    else:
        unit_amount, tier = rate.unit_amount, None
    return InvoiceLine(
        meter=meter.event_name,
        description=_describe(meter, price.match, per_units=rate.per_units, price=price),
        match=dict(price.match),
        price_id=price.id,
        period_start=start,
        period_end=end,
        quantity=priced.quantity,
        unit_amount=unit_amount,
        per_units=rate.per_units,
        amount=round_money(priced.amount, meter.currency),
        tier=tier,
        unpriced=False,
        tiers=priced.tiers,
        free_units_applied=priced.free_units_applied if price.free_units else None,
        packages=priced.packages,
    )


def _describe(
    meter: MeterInfo,
    match: Mapping[str, str],
    *,
    per_units: Decimal = Decimal(1),
    unpriced: bool = False,
    price: PriceRule | None = None,
) -> str:
    """`Input tokens — model=gpt-4o (per 1000000 tokens)`, `API calls — graduated tiers`,
    `Cache writes — model=gpt-4o — 1.25 times input_tokens (per 1000000 tokens)`,
    `Messages — 1000 messages free — packages of 100 messages`."""
    text = meter.name
    if match:
        text += " — " + ", ".join(f"{key}={value}" for key, value in sorted(match.items()))
    if unpriced:
        return text + " (unpriced)"
    units = meter.unit or "units"
    if price is not None:
        if price.tiers:
            text += f" — {price.tier_mode} tiers"
        if price.free_units:
            text += f" — {_plain(price.free_units)} {units} free"
        if price.package_size is not None:
            text += f" — packages of {_plain(price.package_size)} {units}"
        if price.relative_to is not None:
            text += f" — {_plain(price.relative_to.factor)} times {price.relative_to.meter}"
    if per_units != 1:
        text += f" (per {_plain(per_units)} {units})"
    return text


def _plain(value: Decimal) -> str:
    return to_plain_string(value.normalize(MONEY_CONTEXT))


# Lines of one meter and match: usage first, then the minimum that tops them up.
_KIND_ORDER = {"usage": 0, "minimum": 1, "charge": 2, "commitment": 3}


def _line_order(line: InvoiceLine) -> tuple[object, ...]:
    """Meters' lines by meter, then charges (no meter)."""
    return (
        line.meter is None,
        line.meter or "",
        tuple(sorted(line.match.items())),
        _KIND_ORDER.get(line.adjusts_kind or line.kind, 2),
        line.period_start,
        line.tier or 0,
        line.unpriced,
        line.price_id or "",
        line.charge_id or "",
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
    LineKind,
    str | None,
    str | None,
    tuple[tuple[str, str], ...],
    bool,
    Decimal | None,
    Decimal,
    str | None,
]


def _identity(line: InvoiceLine) -> _LineIdentity:
    """What a prior period's line is compared by: the kind of line it bills (an adjustment
    line: the kind it adjusts), meter, price, match, unpriced, unit amount and per_units.

    The unit amount matters for a plain or relative price (a relative price bills at the rate
    of whichever price it refers to, so one price may give lines at several unit amounts). A
    tiered price's line shows the rate of the highest tier reached, and a minimum line's unit
    amount is its top-up, both of which late usage may change, so the price alone identifies
    those and the lines of prices with free units or packages (one line per price and period
    anyway); lines stored per tier (`tier` set, before a tiered price became one line) compare
    with the one line too."""
    kind = line.adjusts_kind or line.kind
    # Lines of prices with tiers, free units or packages say so (an adjustment line of one
    # carries the differences of those), and a minimum line's unit amount is its top-up.
    by_price = (
        kind in ("minimum", "commitment")
        or line.tier is not None
        or bool(line.tiers)
        or line.free_units_applied is not None
        or line.packages is not None
    )
    return (
        kind,
        line.meter,
        line.price_id,
        tuple(sorted(line.match.items())),
        line.unpriced,
        None if by_price else line.unit_amount,
        line.per_units,
        line.charge_id,
    )


@dataclass(slots=True)
class _Difference:
    """Current minus billed, for one line identity."""

    template: InvoiceLine
    quantity: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)
    free_units_applied: Decimal | None = None
    packages: Decimal | None = None
    tiers: dict[int, TierShare] = field(default_factory=dict)

    def add(self, sign: int, line: InvoiceLine) -> None:
        self.quantity += sign * line.quantity
        self.amount += sign * line.amount
        if line.free_units_applied is not None:
            self.free_units_applied = (self.free_units_applied or Decimal(0)) + (
                sign * line.free_units_applied
            )
        if line.packages is not None:
            self.packages = (self.packages or Decimal(0)) + sign * line.packages
        # A line stored per tier (before a tiered price became one line) is that tier's share.
        shares = line.tiers
        if not shares and line.tier is not None and line.kind == "usage":
            shares = (
                TierShare(
                    line.tier, None, line.quantity, line.unit_amount, Decimal(0), line.amount
                ),
            )
        for share in shares:
            known = self.tiers.get(share.tier)
            self.tiers[share.tier] = TierShare(
                tier=share.tier,
                up_to=share.up_to if known is None or known.up_to is None else known.up_to,
                quantity=(Decimal(0) if known is None else known.quantity) + sign * share.quantity,
                unit_amount=share.unit_amount if known is None else known.unit_amount,
                flat_amount=(Decimal(0) if known is None else known.flat_amount)
                + sign * share.flat_amount,
                amount=(Decimal(0) if known is None else known.amount) + sign * share.amount,
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
    line identity (`_identity`) the result carries the difference in quantity and amount,
    current minus billed, when either is non-zero; amounts are differences of rounded amounts,
    so no new rounding happens. Free units used, packages and each tier's share are
    differences too (tiers that did not change are left out). Each line is of kind
    `adjustment`, says which kind of line it corrects (`adjusts_kind`: usage or minimum) and
    names the period it adjusts (`adjusts_period`, and a description starting
    "Adjustment for <period>: ").
    """
    differences: dict[_LineIdentity, _Difference] = {}
    with localcontext(MONEY_CONTEXT):
        for sign, lines in ((1, current), (-1, billed)):
            for line in lines:
                key = _identity(line)
                differences.setdefault(key, _Difference(line)).add(sign, line)
        adjustments: list[InvoiceLine] = []
        for key, difference in differences.items():
            if difference.quantity == 0 and difference.amount == 0:
                continue
            template = difference.template
            description = _ADJUSTMENT_PREFIX.sub("", template.description)
            amount = difference.amount
            adjustments.append(
                InvoiceLine(
                    kind="adjustment",
                    adjusts_kind=key[0],
                    meter=template.meter,
                    description=f"Adjustment for {period_label}: {description}",
                    match=dict(template.match),
                    price_id=template.price_id,
                    period_start=template.period_start,
                    period_end=template.period_end,
                    quantity=difference.quantity,
                    unit_amount=template.unit_amount,
                    per_units=template.per_units,
                    amount=amount.copy_abs() if amount.is_zero() else amount,
                    tier=template.tier,
                    unpriced=template.unpriced,
                    adjusts_period=period_label,
                    charge_id=template.charge_id,
                    commitment_id=template.commitment_id,
                    tiers=tuple(
                        share
                        for _, share in sorted(difference.tiers.items())
                        if share.quantity or share.amount
                    ),
                    free_units_applied=difference.free_units_applied,
                    packages=difference.packages,
                )
            )
    return sorted(adjustments, key=_line_order)
