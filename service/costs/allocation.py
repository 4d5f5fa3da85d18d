"""Sharing each period's charges among the groups and windows whose usage they price, as pure
functions (no database).

A billing period is rated as its invoice rates it (`service.invoices.rating`): the usage of
each meter merged per rate, and each rate's exact amount for the period (`period_charges`: the
one amount function, tiers filled by the whole period's usage). A piece of usage shown in a
costs answer (one group, one window, one stretch between price changes) carries the share of
its rate's charge in proportion to its quantity:

    cost = quantity x (charge amount / charge quantity)

so the pieces of a rate add up to its charge, whatever the amount function is (graduated
tiers today), and the answer's costs add up to the invoice's lines before rounding. For a
price without tiers the share is exactly quantity x unit amount / per units.

A `last` meter bills, per group of the attributes its prices match on, the latest value of
the period, priced at that value's time: its cost goes to the group and window holding that
latest event (and nowhere when the answer's range or filters leave it out).

A `max` or `unique_count` meter's quantity is no sum over groups (the period's largest value,
its number of distinct values), so a unit share means nothing. Each rate's charge is shared
among the pieces of the period it prices (per group of the answer's keys and the price keys,
window and stretch between price changes, ignoring the answer's range and filters) in
proportion to each piece's own quantity (its largest value; its distinct values):

    cost = charge amount x piece quantity / sum of the quantities of the rate's pieces

so the pieces of a period add up to its charge, and an answer covering whole periods adds up
to the invoice's lines before rounding; the answer shows the pieces its range and filters
keep.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

from service.common.money import MONEY_CONTEXT
from service.invoices.period_usage import group_usage
from service.invoices.rating import PeriodCharge, period_charges, rate_usage
from service.invoices.repository import MeterPricing
from service.meters.pricing import Rate, resolve_rate
from service.rollups.query import Cell, RollupQuery, WeightedCell, Weighting

Group = tuple[str | None, ...]

# How precisely the database sums weighted usage (`weighting`). A weight (charge / quantity)
# is kept to 80 significant digits, and each answer cell's sum is rounded to 30 decimal
# places: the error of a sum (at most quantity x 10^-80 of its weight per cell, however many
# cells) stays far below 10^-30, so rounding there gives back the exact value of every cost
# that ends within 30 places (as costs of prices without tiers do) and is off by less than
# 10^-30 otherwise; answers show 12. The 200 digits of `unit_share` made PostgreSQL multiply
# and Python add 200-digit numbers for every (key x model) cell of a month.
WEIGHT_CONTEXT = Context(prec=80, rounding=ROUND_HALF_EVEN)
WEIGHTED_PLACES = 30
# (the latest event's time, its id): how `last` orders events.
LastEvent = tuple[datetime, int]


@dataclass(frozen=True, slots=True)
class PeriodRating:
    """One meter's billing period as its invoice rates it: each rate's charge, and for a `last`
    meter the event whose value each group (values of the meter's price keys) bills."""

    start: datetime
    end: datetime
    charges: Mapping[tuple[str, ...], PeriodCharge]
    billed_last: Mapping[Group, LastEvent] = field(default_factory=dict)


def rate_period(
    meter: MeterPricing,
    tenant_id: str,
    query: RollupQuery,
    cells: Sequence[Cell],
) -> PeriodRating:
    """The rating of one period from the cells of its `period_query` (what the invoice reads).

    Raises what `rate_usage` raises (AmbiguousPriceError for prices that tie)."""
    start, end = query.edges[0], query.edges[-1]
    rated = rate_usage(
        meter.info,
        group_usage(query, cells, unique_key=meter.info.unique_key),
        meter.prices,
        tenant_id=tenant_id,
        period_start=start,
        period_end=end,
    )
    billed_last: dict[Group, LastEvent] = {}
    if meter.info.aggregation == "last":
        for cell in cells:
            if cell.last_ts is None or cell.last_event_id is None:
                continue
            event = (cell.last_ts, cell.last_event_id)
            if cell.group not in billed_last or event > billed_last[cell.group]:
                billed_last[cell.group] = event
    charges = {charge.rate.key: charge for charge in period_charges(rated)}
    return PeriodRating(start, end, charges, billed_last)


@dataclass(slots=True)
class Costs:
    """Costs being gathered: per (window index, shown group values) and meter, [quantity,
    cost]; and per meter the quantity no price covers. Exact decimals."""

    rows: dict[tuple[int, Group], dict[str, list[Decimal]]] = field(default_factory=dict)
    unpriced: dict[str, Decimal] = field(default_factory=dict)

    def add_priced(
        self,
        window: int,
        group: Group,
        meter: str,
        quantity: Decimal,
        cost: Decimal,
        *,
        largest: bool = False,
    ) -> None:
        """`largest`: a max meter's quantity, kept when larger rather than added."""
        meters = self.rows.setdefault((window, group), {})
        entry = meters.get(meter)
        if entry is None:
            meters[meter] = [quantity, cost]
        else:
            entry[0] = max(entry[0], quantity) if largest else entry[0] + quantity
            entry[1] += cost

    def add_unpriced(self, meter: str, quantity: Decimal, *, largest: bool = False) -> None:
        known = self.unpriced.get(meter)
        if known is None:
            self.unpriced[meter] = quantity
        else:
            self.unpriced[meter] = max(known, quantity) if largest else known + quantity


def unit_share(charge: PeriodCharge | None) -> Decimal:
    """What one unit of `charge`'s usage carries of it: amount / quantity, to the money
    context's 200 significant digits (far below the 12 places shown). No charge (its usage
    adds up to zero) costs nothing."""
    if charge is None or charge.quantity == 0:
        return Decimal(0)
    with localcontext(MONEY_CONTEXT):
        return charge.amount / charge.quantity


def allocate(
    costs: Costs,
    meter: MeterPricing,
    *,
    tenant_id: str,
    query: RollupQuery,
    cells: Sequence[Cell],
    shown: int,
    windows: Sequence[datetime],
    periods: Sequence[PeriodRating],
) -> None:
    """Add the costs of `cells` (of `query`, grouped by the shown keys then the meter's price
    keys, its edges including every window, period and price boundary) to `costs`.

    `windows` are the answer's window boundaries; `periods` the rated billing periods, in
    order, covering the query's range."""
    name = meter.info.event_name
    keys = meter.group_keys
    positions = [list(query.group_by).index(key) for key in keys]
    period_starts = [period.start for period in periods]
    edges = query.edges
    rates: dict[tuple[int, Group], Rate | None] = {}
    units: dict[tuple[int, tuple[str, ...]], Decimal] = {}  # by period and rate

    def place(cell: Cell) -> tuple[int, PeriodRating, Group]:
        at = edges[cell.window]
        window = bisect_right(windows, at) - 1
        period = periods[bisect_right(period_starts, at) - 1]
        return window, period, tuple(cell.group[i] for i in positions)

    with localcontext(MONEY_CONTEXT):
        for cell in cells:
            window, period, values = place(cell)
            if meter.info.aggregation == "last":
                if cell.last is None or cell.last_ts is None or cell.last_event_id is None:
                    continue
                if period.billed_last.get(values) != (cell.last_ts, cell.last_event_id):
                    continue  # not the value its group bills for the period
                quantity = cell.last
                rate = resolve_rate(
                    meter.prices,
                    meter=name,
                    tenant_id=tenant_id,
                    attributes=dict(zip(keys, values, strict=True)),
                    at=cell.last_ts,
                )
            else:
                quantity = cell.sum if meter.info.aggregation == "sum" else Decimal(cell.count)
                # Priced at the start of its stretch, as rating prices a segment.
                cache_key = (cell.window, values)
                if cache_key in rates:
                    rate = rates[cache_key]
                else:
                    rate = rates[cache_key] = resolve_rate(
                        meter.prices,
                        meter=name,
                        tenant_id=tenant_id,
                        attributes=dict(zip(keys, values, strict=True)),
                        at=edges[cell.window],
                    )
            if quantity == 0:
                continue
            if rate is None:
                costs.add_unpriced(name, quantity)
                continue
            unit_key = (id(period), rate.key)
            unit = units.get(unit_key)
            if unit is None:
                unit = units[unit_key] = unit_share(period.charges.get(rate.key))
            cost = quantity * unit
            costs.add_priced(window, cell.group[:shown], name, quantity, cost)


def piece_quantity(meter: MeterPricing, cell: Cell) -> Decimal:
    """A `max` or `unique_count` meter's quantity of one cell."""
    if meter.info.aggregation == "max":
        return cell.max or Decimal(0)
    return Decimal(cell.distinct or 0)


def allocate_shared(
    costs: Costs,
    meter: MeterPricing,
    *,
    tenant_id: str,
    query: RollupQuery,
    cells: Sequence[Cell],
    shown: int,
    windows: Sequence[datetime],
    periods: Sequence[PeriodRating],
    filters: Mapping[str, Sequence[str]],
) -> None:
    """Add the costs of a `max` or `unique_count` meter to `costs`: `cells` (of `query`,
    grouped by the shown keys, then the price keys, then the filter keys, without filters,
    its edges covering the whole of every period) share each rate's charge in proportion to
    their quantities; those inside the answer's range and filters are added."""
    name = meter.info.event_name
    group_by = list(query.group_by)
    positions = [group_by.index(key) for key in meter.group_keys]
    filter_positions = {group_by.index(key): set(accepted) for key, accepted in filters.items()}
    period_starts = [period.start for period in periods]
    placed: list[tuple[Cell, PeriodRating, Rate | None, Decimal]] = []
    totals: dict[tuple[int, tuple[str, ...]], Decimal] = {}
    with localcontext(MONEY_CONTEXT):
        for cell in cells:
            quantity = piece_quantity(meter, cell)
            if quantity == 0:
                continue
            at = query.edges[cell.window]
            period = periods[bisect_right(period_starts, at) - 1]
            rate = resolve_rate(
                meter.prices,
                meter=name,
                tenant_id=tenant_id,
                attributes={
                    key: cell.group[position]
                    for key, position in zip(meter.group_keys, positions, strict=True)
                },
                at=at,
            )
            placed.append((cell, period, rate, quantity))
            if rate is not None:
                key = (id(period), rate.key)
                totals[key] = totals.get(key, Decimal(0)) + quantity
        for cell, period, rate, quantity in placed:
            at = query.edges[cell.window]
            if not windows[0] <= at < windows[-1]:
                continue
            if any(
                cell.group[position] not in accepted
                for position, accepted in filter_positions.items()
            ):
                continue
            if rate is None:
                costs.add_unpriced(name, quantity, largest=meter.info.aggregation == "max")
                continue
            charge = period.charges.get(rate.key)
            amount = Decimal(0) if charge is None else charge.amount
            cost = amount * quantity / totals[(id(period), rate.key)]
            window = bisect_right(windows, at) - 1
            costs.add_priced(
                window,
                cell.group[:shown],
                name,
                quantity,
                cost,
                largest=meter.info.aggregation == "max",
            )


def weighting(
    meter: MeterPricing,
    *,
    tenant_id: str,
    query: RollupQuery,
    shown: int,
    windows: Sequence[datetime],
    periods: Sequence[tuple[RollupQuery, Sequence[Cell], PeriodRating]],
) -> Weighting:
    """How the database prices the cells of `query` (a sum or count meter's shown usage, as
    `allocate` takes it): per stretch of a period between price changes (a segment of its
    `period_query`) and values of the meter's price keys, the per-unit share of the charge of
    the rate that prices it (`unit_share`); usage without a rate gets no weight (unpriced)."""
    name = meter.info.event_name
    keys = meter.group_keys
    starts: list[datetime] = []
    weights: list[tuple[int, tuple[str, ...], Decimal]] = []
    for period_query, cells, rating in periods:
        first = len(starts)
        starts += period_query.edges[:-1]
        units: dict[tuple[str, ...], Decimal] = {}
        for cell in cells:  # one per segment and values of the price keys
            rate = resolve_rate(
                meter.prices,
                meter=name,
                tenant_id=tenant_id,
                attributes=dict(zip(keys, cell.group, strict=True)),
                at=period_query.edges[cell.window],
            )
            if rate is None:
                continue
            if rate.key not in units:
                units[rate.key] = WEIGHT_CONTEXT.plus(unit_share(rating.charges.get(rate.key)))
            values = tuple("" if value is None else value for value in cell.group)
            weights.append((first + cell.window, values, units[rate.key]))
    edges = query.edges[:-1]
    return Weighting(
        quantity="sum" if meter.info.aggregation == "sum" else "count",
        shown=shown,
        keys=[list(query.group_by).index(key) for key in keys],
        windows=[bisect_right(windows, edge) - 1 for edge in edges],
        # 1-based: PostgreSQL arrays start at 1, like the query's window index.
        parts=[bisect_right(starts, edge) for edge in edges],
        weights=[(part + 1, values, weight) for part, values, weight in weights],
        places=WEIGHTED_PLACES,
    )


def add_weighted(costs: Costs, meter: str, cells: Sequence[WeightedCell]) -> None:
    """Add the answer of a `read_weighted` to `costs`."""
    for cell in cells:
        if cell.quantity != 0:
            costs.add_priced(cell.window, cell.group, meter, cell.quantity, cell.cost)
        if cell.unweighted != 0:
            costs.add_unpriced(meter, cell.unweighted)
