"""Price definitions and price resolution, as pure functions (no database).

A usage record (a tenant, the attribution and dimension values of its events, an instant) is
priced by the applicable price that is most particular to it: a tenant's contract override
beats any list price, then the price whose `match` names the most keys wins.

A relative price has no amount of its own: per unit it costs `factor` times the per-unit rate
(`unit_amount / per_units`) of the price that the same usage (same tenant, attribute values and
instant) resolves to on the referenced meter (`resolve_rate`).

What a period's quantity costs under one price is `price_quantity`: free units come off first,
then the rest is billed in whole packages, through tiers (graduated or volume, with flat
amounts per tier) or at the plain rate. Amounts are exact; invoices round each line once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Any, Literal

from service.common.money import MONEY_CONTEXT, is_currency
from service.meters.models import Meter, Price


class AmbiguousPriceError(ValueError):
    """Two or more prices tie for the same usage; the admin API should have refused one."""

    def __init__(self, price_ids: Sequence[str]) -> None:
        self.price_ids = tuple(price_ids)
        super().__init__(
            "prices "
            + ", ".join(repr(price_id) for price_id in self.price_ids)
            + " apply equally to the same usage (same tenant level and the same number of"
            " matched keys); end one of them with effective_to or make one more specific"
        )


class PriceCycleError(ValueError):
    """Relative prices refer to each other in a circle; the admin API refuses that."""

    def __init__(self, meters: Sequence[str]) -> None:
        self.meters = tuple(meters)
        super().__init__("relative prices refer in a cycle: " + " -> ".join(self.meters))


@dataclass(frozen=True, slots=True)
class RelativeTo:
    """Per unit, `factor` times the rate of the price that applies on meter `meter`."""

    meter: str
    factor: Decimal


TierMode = Literal["graduated", "volume"]
TIER_MODES: tuple[TierMode, ...] = ("graduated", "volume")


class PriceFieldError(ValueError):
    """An invalid price field; `field` names it as the API does (`tiers[1].up_to`)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Tier:
    """One step of a tiered price.

    Tier n covers the quantity above the previous tier's `up_to` (0 for the first tier) up to
    and including its own `up_to`; `None` means open-ended and is allowed on the last tier only.
    `flat_amount` is charged once when a period's quantity enters the tier (never divided by
    `per_units`).
    """

    up_to: Decimal | None
    unit_amount: Decimal  # per `per_units` units of the price
    flat_amount: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceRule:
    """A price of one meter, as stored. Construct with keywords; invalid values raise ValueError."""

    id: str
    meter: str  # the meter's event_name
    currency: str
    effective_from: datetime  # tz-aware, inclusive
    # Per `per_units` units; ignored when `tiers` is non-empty or the price is relative.
    unit_amount: Decimal = Decimal(0)
    effective_to: datetime | None = None  # tz-aware, exclusive; None = open-ended
    # None only for a relative price: its unit amount is shown per the referenced price's.
    per_units: Decimal | None = Decimal(1)
    match: Mapping[str, str] = field(default_factory=dict)  # {} matches all usage
    tenant_id: str | None = None  # None = list price; else that tenant's contract override
    tiers: tuple[Tier, ...] = ()
    # graduated: each unit at its tier's rate; volume: every unit at the rate of the tier the
    # period's quantity reaches. Only meaningful with tiers.
    tier_mode: TierMode = "graduated"
    # Units per period that cost nothing, deducted before tiers or packages.
    free_units: Decimal = Decimal(0)
    # The quantity after free units is rounded up to whole packages of this many units, and
    # `unit_amount` is the price of one package (per_units is then 1; no tiers).
    package_size: Decimal | None = None
    # A period's amount below this is topped up (by a separate invoice line).
    minimum_amount: Decimal | None = None
    relative_to: RelativeTo | None = None

    def __post_init__(self) -> None:
        if not is_currency(self.currency):
            raise ValueError(f"price {self.id!r}: unknown currency {self.currency!r}")
        if self.relative_to is not None:
            factor = self.relative_to.factor
            if not factor.is_finite() or factor <= 0:
                raise ValueError(f"price {self.id!r}: relative_to.factor must be > 0")
            if self.tiers:
                raise ValueError(f"price {self.id!r}: a relative price has no tiers")
            if self.free_units or self.package_size is not None or self.minimum_amount is not None:
                raise ValueError(
                    f"price {self.id!r}: a relative price has no free units, packages or minimum"
                )
        elif self.per_units is None:
            raise ValueError(f"price {self.id!r}: per_units is required unless relative")
        if self.tier_mode not in TIER_MODES:
            raise ValueError(f"price {self.id!r}: tier_mode must be one of {TIER_MODES}")
        if self.tier_mode == "volume" and not self.tiers:
            raise ValueError(f"price {self.id!r}: volume pricing needs tiers")
        if not self.free_units.is_finite() or self.free_units < 0:
            raise ValueError(f"price {self.id!r}: free_units must be a finite number >= 0")
        if self.package_size is not None:
            if not self.package_size.is_finite() or self.package_size <= 0:
                raise ValueError(f"price {self.id!r}: package_size must be a finite number > 0")
            if self.per_units != 1:
                raise ValueError(f"price {self.id!r}: per_units must be 1 with package_size")
            if self.tiers:
                raise ValueError(f"price {self.id!r}: package_size cannot be combined with tiers")
        if self.minimum_amount is not None and (
            not self.minimum_amount.is_finite() or self.minimum_amount < 0
        ):
            raise ValueError(f"price {self.id!r}: minimum_amount must be a finite amount >= 0")
        if not self.unit_amount.is_finite() or self.unit_amount < 0:
            raise ValueError(f"price {self.id!r}: unit_amount must be a finite amount >= 0")
        if self.per_units is not None and (not self.per_units.is_finite() or self.per_units <= 0):
            raise ValueError(f"price {self.id!r}: per_units must be a finite number > 0")
        if self.effective_from.tzinfo is None or self.effective_from.utcoffset() is None:
            raise ValueError(f"price {self.id!r}: effective_from must be timezone-aware")
        if self.effective_to is not None:
            if self.effective_to.tzinfo is None or self.effective_to.utcoffset() is None:
                raise ValueError(f"price {self.id!r}: effective_to must be timezone-aware")
            if self.effective_to <= self.effective_from:
                raise ValueError(f"price {self.id!r}: effective_to must be after effective_from")
        validate_tiers(self.tiers)


def validate_tiers(tiers: Sequence[Tier]) -> None:
    """Check tiers; raise PriceFieldError (a ValueError) naming the offending tier's field.

    An empty sequence means "not tiered" and is valid. Otherwise every `up_to` but the last
    is a positive number, larger than the one before; the last tier is open-ended (`None`);
    unit and flat amounts are finite and >= 0.
    """
    previous: Decimal | None = None
    last = len(tiers) - 1
    for index, tier in enumerate(tiers):
        where = f"tiers[{index}]"
        if not tier.unit_amount.is_finite() or tier.unit_amount < 0:
            raise PriceFieldError(
                f"{where}.unit_amount", f"{where}.unit_amount must be a finite amount >= 0"
            )
        if not tier.flat_amount.is_finite() or tier.flat_amount < 0:
            raise PriceFieldError(
                f"{where}.flat_amount", f"{where}.flat_amount must be a finite amount >= 0"
            )
        if tier.up_to is None:
            if index != last:
                raise PriceFieldError(
                    f"{where}.up_to",
                    f"{where}.up_to is open-ended (null) but only the last tier may be;"
                    " give it an upper bound or move it to the end",
                )
            continue
        if index == last:
            raise PriceFieldError(
                f"{where}.up_to",
                f"{where}.up_to must be null: the last tier has to be open-ended so that"
                " every quantity has a price",
            )
        if not tier.up_to.is_finite() or tier.up_to <= 0:
            raise PriceFieldError(f"{where}.up_to", f"{where}.up_to must be a finite number > 0")
        if previous is not None and tier.up_to <= previous:
            raise PriceFieldError(
                f"{where}.up_to",
                f"{where}.up_to ({tier.up_to}) must be greater than"
                f" tiers[{index - 1}].up_to ({previous}); list tiers in increasing order",
            )
        previous = tier.up_to


def price_applies(
    price: PriceRule,
    *,
    tenant_id: str,
    attributes: Mapping[str, str | None],
    at: datetime,
) -> bool:
    """Whether `price` may price usage of `tenant_id` with these attribute values at `at`.

    The price is the list price or this tenant's override, every key of its `match` is present
    in `attributes` with the same value (a missing or null attribute matches nothing), and
    `effective_from <= at < effective_to`.
    """
    if price.tenant_id is not None and price.tenant_id != tenant_id:
        return False
    if at < price.effective_from:
        return False
    if price.effective_to is not None and at >= price.effective_to:
        return False
    return all(attributes.get(key) == value for key, value in price.match.items())


def resolve_price(
    prices: Iterable[PriceRule],
    *,
    tenant_id: str,
    attributes: Mapping[str, str | None],
    at: datetime,
) -> PriceRule | None:
    """The price for this usage, or None when no price applies.

    Among applicable prices, a tenant override always beats a list price (even a list price
    with a more specific match); then the price matching the most keys wins. Should two
    prices still tie, AmbiguousPriceError is raised rather than picking one.
    """
    applicable = [
        price
        for price in prices
        if price_applies(price, tenant_id=tenant_id, attributes=attributes, at=at)
    ]
    if not applicable:
        return None
    overrides = [price for price in applicable if price.tenant_id is not None]
    candidates = overrides or applicable
    most_keys = max(len(price.match) for price in candidates)
    winners = [price for price in candidates if len(price.match) == most_keys]
    if len(winners) > 1:
        raise AmbiguousPriceError(sorted(price.id for price in winners))
    return winners[0]


@dataclass(frozen=True, slots=True)
class Rate:
    """What usage costs under the price that applies to it, references followed.

    `unit_amount` per `per_units` units is what an invoice line shows: a relative price's own
    `per_units`, else the referenced price's. `basis` names the prices followed from `price` to
    the one whose amount the rate comes from (empty for a price with an amount of its own);
    every price of that chain applies throughout `[effective_from, effective_to)`.
    """

    price: PriceRule
    unit_amount: Decimal
    per_units: Decimal
    basis: tuple[PriceRule, ...]
    effective_from: datetime
    effective_to: datetime | None

    @property
    def key(self) -> tuple[str, ...]:
        return (self.price.id, *(price.id for price in self.basis))


def resolve_rate(
    prices: Iterable[PriceRule],
    *,
    meter: str,
    tenant_id: str,
    attributes: Mapping[str, str | None],
    at: datetime,
) -> Rate | None:
    """The rate of usage of `meter`: `resolve_price` among `meter`'s prices, then, while the
    price found is relative, `resolve_price` on the meter it refers to for the same tenant,
    attributes and instant, the factors multiplied. None when no price applies at some step
    (usage a relative price cannot refer to is unpriced).

    The referenced price's rate is its `unit_amount / per_units`; for a tiered price (graduated
    or volume) that is its first tier's, for a package price one package's amount divided by
    the package size. Free units, flat amounts and minimums of the referenced price do not carry
    over. PriceCycleError when the references come back to a meter.
    """
    by_meter: dict[str, list[PriceRule]] = {}
    for price in prices:
        by_meter.setdefault(price.meter, []).append(price)
    chain: list[PriceRule] = []
    visited = [meter]
    current = meter
    while True:
        found = resolve_price(
            by_meter.get(current, ()), tenant_id=tenant_id, attributes=attributes, at=at
        )
        if found is None:
            return None
        chain.append(found)
        if found.relative_to is None:
            break
        current = found.relative_to.meter
        if current in visited:
            raise PriceCycleError([*visited, current])
        visited.append(current)
    base = chain[-1]
    assert base.per_units is not None  # only relative prices may lack it
    # The first price of the chain that states per_units sets how the amount is shown.
    per_units = next(price.per_units for price in chain if price.per_units is not None)
    with localcontext(MONEY_CONTEXT):
        factor = Decimal(1)
        for price in chain[:-1]:
            assert price.relative_to is not None
            factor *= price.relative_to.factor
        if len(chain) == 1:
            unit_amount = base.unit_amount
        else:
            base_amount, base_per_units = base_rate(base)
            unit_amount = factor * base_amount * per_units / base_per_units
    ends = [price.effective_to for price in chain if price.effective_to is not None]
    return Rate(
        price=chain[0],
        unit_amount=unit_amount,
        per_units=per_units,
        basis=tuple(chain[1:]),
        effective_from=max(price.effective_from for price in chain),
        effective_to=min(ends) if ends else None,
    )


def base_rate(price: PriceRule) -> tuple[Decimal, Decimal]:
    """The rate a relative price multiplies, as (amount, per units): `unit_amount` per
    `per_units`, the first tier's for a tiered price, one package's amount per `package_size`
    units for a package price. A pair, so that the caller divides last and stays exact."""
    assert price.per_units is not None  # only relative prices may lack it
    if price.tiers:
        return price.tiers[0].unit_amount, price.per_units
    if price.package_size is not None:
        return price.unit_amount, price.package_size
    return price.unit_amount, price.per_units


# What a quantity costs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TierShare:
    """The part of a period's quantity (after free units) that one tier bills."""

    tier: int  # 1-based index into the price's tiers
    up_to: Decimal | None  # the tier's upper bound (inclusive), None when open-ended
    quantity: Decimal
    unit_amount: Decimal  # per the price's per_units
    flat_amount: Decimal  # the tier's flat amount when it counts here, else 0
    amount: Decimal  # exact: quantity x unit_amount / per_units + flat_amount


@dataclass(frozen=True, slots=True)
class PricedQuantity:
    """What `quantity` costs under one price, with the rules that applied; `amount` is exact
    (invoices round each line once)."""

    quantity: Decimal
    free_units_applied: Decimal  # of `quantity`, the units the free allowance covered
    packages: Decimal | None  # whole packages billed, for a package price
    tiers: tuple[TierShare, ...]  # tiers entered, for a tiered price
    amount: Decimal

    @property
    def highest_tier(self) -> TierShare | None:
        return self.tiers[-1] if self.tiers else None


def is_linear(price: PriceRule) -> bool:
    """Whether the price's amount is plain quantity x rate (no tiers, free units or packages),
    so it may bill negative quantities and splitting usage never changes the amount."""
    return not price.tiers and not price.free_units and price.package_size is None


def credit_rate(price: PriceRule) -> Decimal:
    """What one unit of a negative quantity credits under a price that is not relative: the
    rate of its first unit billed, ignoring free units and flat amounts (the first tier's
    unit_amount, a package's unit_amount spread over its units, else unit_amount) per
    per_units."""
    assert price.per_units is not None
    if price.package_size is not None:
        return price.unit_amount / price.package_size
    if price.tiers:
        return price.tiers[0].unit_amount / price.per_units
    return price.unit_amount / price.per_units


def tier_index(tiers: Sequence[Tier], quantity: Decimal) -> int:
    """0-based index of the tier `quantity` (> 0) falls in; `up_to` is inclusive."""
    for index, tier in enumerate(tiers):
        if tier.up_to is None or quantity <= tier.up_to:
            return index
    raise ValueError("the last tier must be open-ended")


def _ceil_packages(quantity: Decimal, size: Decimal) -> Decimal:
    return (quantity / size).to_integral_value(rounding=ROUND_CEILING)


def price_quantity(
    price: PriceRule,
    quantity: Decimal,
    *,
    before: Decimal = Decimal(0),
    total: Decimal | None = None,
) -> PricedQuantity:
    """What `quantity` costs under `price` (not a relative one), exact.

    `before` is the quantity billed earlier in the same period by prices this one continues
    (a price change that keeps the structure: see `rate_meter`), `total` that whole period's
    quantity (default: `before + quantity`); both only matter for prices whose amount is not
    linear. Rules, in order:

    - free units: the period's first `free_units` units cost nothing;
    - packages: the rest is rounded up to whole packages of `package_size`, each at
      `unit_amount` (a package already started by `before` is not billed again);
    - graduated tiers: each unit at the rate of the tier it falls in, and a tier's flat amount
      when this quantity enters the tier (its first unit above the previous tier's `up_to`);
    - volume tiers: every unit at the rate of the tier the period's total (after free units)
      reaches, `up_to` inclusive, plus that tier's flat amount, once, with the period's last
      unit;
    - otherwise: quantity x unit_amount / per_units.

    Zero (after free units) enters no tier and costs nothing, flat amounts included. A
    negative quantity (refunds beyond the usage billed at this price in the period) is a
    credit at the price's first rate (`credit_rate`): no free units, packages, flat amounts
    or later tiers.
    """
    per_units = price.per_units
    if price.relative_to is not None or per_units is None:
        raise ValueError(f"price {price.id!r} is relative: rate it with resolve_rate")
    with localcontext(MONEY_CONTEXT):
        if is_linear(price):
            return PricedQuantity(
                quantity, Decimal(0), None, (), quantity * price.unit_amount / per_units
            )
        if quantity < 0:
            return PricedQuantity(quantity, Decimal(0), None, (), quantity * credit_rate(price))
        if before < 0:
            raise ValueError(f"price {price.id!r}: the quantity before ({before}) is negative")
        if total is None:
            total = before + quantity
        free = price.free_units
        net_before = max(before - free, Decimal(0))
        net_after = max(before + quantity - free, Decimal(0))
        free_applied = quantity - (net_after - net_before)
        if price.package_size is not None:
            packages = _ceil_packages(net_after, price.package_size) - _ceil_packages(
                net_before, price.package_size
            )
            return PricedQuantity(
                quantity, free_applied, packages, (), packages * price.unit_amount
            )
        if not price.tiers:
            amount = (net_after - net_before) * price.unit_amount / per_units
            return PricedQuantity(quantity, free_applied, None, (), amount)
        if price.tier_mode == "volume":
            shares = _volume_shares(price, per_units, net_before, net_after, total - free)
        else:
            shares = _graduated_shares(price, per_units, net_before, net_after)
        amount = sum((share.amount for share in shares), Decimal(0))
        return PricedQuantity(quantity, free_applied, None, shares, amount)


def _graduated_shares(
    price: PriceRule, per_units: Decimal, net_before: Decimal, net_after: Decimal
) -> tuple[TierShare, ...]:
    shares: list[TierShare] = []
    lower = Decimal(0)
    for index, tier in enumerate(price.tiers):
        upper = tier.up_to
        share = max(
            (net_after if upper is None else min(upper, net_after)) - max(lower, net_before),
            Decimal(0),
        )
        if share > 0:
            # Entered here when this quantity holds the tier's first unit.
            flat = tier.flat_amount if net_before <= lower else Decimal(0)
            shares.append(
                TierShare(
                    tier=index + 1,
                    up_to=upper,
                    quantity=share,
                    unit_amount=tier.unit_amount,
                    flat_amount=flat,
                    amount=share * tier.unit_amount / per_units + flat,
                )
            )
        if upper is None or upper >= net_after:
            break
        lower = upper
    return tuple(shares)


def _volume_shares(
    price: PriceRule,
    per_units: Decimal,
    net_before: Decimal,
    net_after: Decimal,
    net_total: Decimal,
) -> tuple[TierShare, ...]:
    share = net_after - net_before
    if share <= 0 or net_total <= 0:
        return ()
    index = tier_index(price.tiers, net_total)
    tier = price.tiers[index]
    # The flat amount goes with the period's last unit, so a period pays it once.
    flat = tier.flat_amount if net_before < net_total <= net_after else Decimal(0)
    return (
        TierShare(
            tier=index + 1,
            up_to=tier.up_to,
            quantity=share,
            unit_amount=tier.unit_amount,
            flat_amount=flat,
            amount=share * tier.unit_amount / per_units + flat,
        ),
    )


def pricing_structure(price: PriceRule) -> tuple[object, ...]:
    """What a price change must keep for the new price to continue the old one's period (its
    tiers' bounds and mode, free units, package size): prices with equal structure, tenant
    and match share free units, packages, tiers and the minimum within a period."""
    return (
        price.tenant_id,
        tuple(sorted(price.match.items())),
        tuple(tier.up_to for tier in price.tiers),
        price.tier_mode if price.tiers else None,
        price.free_units,
        price.package_size,
    )


def reference_cycle(references: Mapping[str, Iterable[str]], meter: str, target: str) -> list[str]:
    """The cycle a new reference from `meter` to `target` would close, as the meters it
    passes (`[meter, target, ..., meter]`), or [] when there is none. `references` maps each
    meter to the meters its relative prices refer to."""
    paths: list[list[str]] = [[meter, target]]
    seen: set[str] = set()
    while paths:
        path = paths.pop()
        last = path[-1]
        if last == meter:
            return path
        if last in seen:
            continue
        seen.add(last)
        paths.extend([*path, following] for following in references.get(last, ()))
    return []


def _intervals_intersect(a: PriceRule, b: PriceRule) -> bool:
    a_before_b_ends = b.effective_to is None or a.effective_from < b.effective_to
    b_before_a_ends = a.effective_to is None or b.effective_from < a.effective_to
    return a_before_b_ends and b_before_a_ends


def prices_overlap(a: PriceRule, b: PriceRule) -> bool:
    """Whether `a` and `b` compete for the same usage at the same time.

    True when they price the same meter for the same tenant (or are both list prices), have an
    identical `match` and their `[effective_from, effective_to)` intervals intersect. The admin
    API refuses a new price that overlaps an existing one (409).
    """
    return (
        a.meter == b.meter
        and a.tenant_id == b.tenant_id
        and dict(a.match) == dict(b.match)
        and _intervals_intersect(a, b)
    )


def prices_conflict(a: PriceRule, b: PriceRule) -> bool:
    """Whether some usage could find `a` and `b` tied in `resolve_price`.

    Wider than `prices_overlap`: two prices with different but compatible matches of the same
    size (`{"model": "x"}` and `{"region": "eu"}`) also tie for usage carrying both values.
    Refusing conflicting prices, not only overlapping ones, makes AmbiguousPriceError
    impossible.
    """
    if a.meter != b.meter or a.tenant_id != b.tenant_id or len(a.match) != len(b.match):
        return False
    compatible = all(b.match.get(key, value) == value for key, value in a.match.items())
    return compatible and _intervals_intersect(a, b)


def price_boundaries(prices: Iterable[PriceRule], start: datetime, end: datetime) -> list[datetime]:
    """The distinct instants strictly inside `(start, end)` where some price starts or ends.

    Splitting `[start, end)` at these gives segments in which every price either applies
    throughout or not at all.
    """
    instants: set[datetime] = set()
    for price in prices:
        for instant in (price.effective_from, price.effective_to):
            if instant is not None and start < instant < end:
                instants.add(instant)
    return sorted(instants)


# Stored prices to pricing rules --------------------------------------------------------


def tiers_from_json(tiers: Sequence[Mapping[str, Any]]) -> tuple[Tier, ...]:
    return tuple(
        Tier(
            up_to=None if tier.get("up_to") is None else Decimal(str(tier["up_to"])),
            unit_amount=Decimal(str(tier["unit_amount"])),
            flat_amount=Decimal(str(tier.get("flat_amount") or 0)),
        )
        for tier in tiers
    )


def to_price_rule(price: Price, meter: Meter) -> PriceRule:
    """The pure pricing view of a stored price (its currency is its meter's)."""
    if meter.currency is None:
        raise ValueError(f"meter {meter.event_name!r} has prices but no currency")
    relative_to = None
    if price.relative_to_meter is not None:
        assert price.relative_factor is not None  # a check constraint pairs them
        relative_to = RelativeTo(meter=price.relative_to_meter, factor=price.relative_factor)
    return PriceRule(
        id=str(price.id),
        meter=meter.event_name,
        currency=meter.currency,
        unit_amount=Decimal(0) if price.unit_amount is None else price.unit_amount,
        per_units=price.per_units,
        relative_to=relative_to,
        match=dict(price.match),
        tenant_id=price.tenant_id,
        tiers=tiers_from_json(price.tiers),
        tier_mode="volume" if price.tier_mode == "volume" else "graduated",
        free_units=price.free_units,
        package_size=price.package_size,
        minimum_amount=price.minimum_amount,
        effective_from=price.effective_from,
        effective_to=price.effective_to,
    )
