"""What a cost budget has spent, as pure functions: its running cells (usage per meter and full
attribution, service.budgets.ingest) priced the way GET /v1/costs prices the same usage.

Costs price a piece of usage at `quantity x (charge amount / charge quantity)`, the charge
being its rate's amount over the tenant's whole invoice month (`service.costs.allocation`). So
a cell costs:

- under a linear price (no tiers, free units or packages) or a relative one: quantity x
  unit amount / per units, whatever else the tenant used;
- under any other price: quantity x the per-unit share of its rate's charge for the month,
  which needs that month's usage of the meter (the caller reads and rates it, exactly as costs
  do, and passes the charges in).

A cell is priced at the time of its first event. It carries the span of its events' times; a
price starting or ending inside that span would price part of it differently, which the cell
cannot tell apart. It keeps only the attributes the tenant's prices matched on when its usage
came in (`kept`); a price of its meter matching on another key cannot be resolved from it.
A cell of a `last`, `max` or `unique_count` meter holds nothing a running total can price.
In each case `CellPlan.split` says so, and the caller then prices the budget from the rollup
store instead (as GET /v1/costs does)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, localcontext

from service.common.money import MONEY_CONTEXT
from service.costs.allocation import unit_share
from service.invoices.rating import PeriodCharge
from service.invoices.repository import MeterPricing
from service.meters.pricing import Rate, is_linear, price_boundaries, resolve_rate

# A price boundary at a cell's last event still splits it (that event is after it).
_AFTER = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class CostCell:
    """A cost budget's usage of one meter with one attribution in one period: `attributes`
    holds the attribution fields and dimensions (None where absent)."""

    meter_id: int
    attributes: Mapping[str, str | None]
    kept: frozenset[str]  # the attribute keys the cell holds values of
    sum: Decimal
    count: int
    first_ts: datetime
    last_ts: datetime


@dataclass(slots=True)
class CellPlan:
    """The cells' quantities with their rates (unpriced usage left out); the meters whose
    month charges pricing needs; whether some cell cannot be priced on its own (a price change
    inside its span, a price matching on a key it did not keep, a meter billing one value of
    the period)."""

    priced: list[tuple[int, Decimal, Rate]] = field(default_factory=list)
    months_needed: set[int] = field(default_factory=set)
    split: bool = False


def linear_rate(rate: Rate) -> bool:
    """Whether every unit under `rate` costs the same, whatever the month's usage."""
    return rate.price.relative_to is not None or is_linear(rate.price)


def plan_cells(
    cells: Sequence[CostCell], meters: Mapping[int, MeterPricing], *, tenant_id: str
) -> CellPlan:
    """Resolve each cell's rate as costs do (override first, most specific match, effective at
    its time, references followed). Cells of meters not in `meters` (not billable, another
    currency) are left out. Raises what `resolve_rate` raises."""
    plan = CellPlan()
    for cell in cells:
        meter = meters.get(cell.meter_id)
        if meter is None:
            continue
        if meter.info.aggregation not in ("sum", "count"):
            # A `last`, `max` or `unique_count` meter bills one value of the whole period (the
            # latest, the largest, the distinct count), which a running sum cannot hold.
            plan.split = True
            continue
        if price_boundaries(meter.prices, cell.first_ts, cell.last_ts + _AFTER) or not set(
            meter.group_keys
        ).issubset(cell.kept):
            plan.split = True
        quantity = cell.sum if meter.info.aggregation == "sum" else Decimal(cell.count)
        if quantity == 0:
            continue
        rate = resolve_rate(
            meter.prices,
            meter=meter.info.event_name,
            tenant_id=tenant_id,
            attributes={key: cell.attributes.get(key) for key in meter.group_keys},
            at=cell.first_ts,
        )
        if rate is None:
            continue  # unpriced: costs list it apart, never in a total
        if not linear_rate(rate):
            plan.months_needed.add(cell.meter_id)
        plan.priced.append((cell.meter_id, quantity, rate))
    return plan


def spent(plan: CellPlan, charges: Mapping[int, Mapping[tuple[str, ...], PeriodCharge]]) -> Decimal:
    """The exact cost of the planned cells; `charges` per meter id of `plan.months_needed`
    (the month's charges by rate key, from `service.costs.allocation.rate_period`)."""
    total = Decimal(0)
    with localcontext(MONEY_CONTEXT):
        for meter_id, quantity, rate in plan.priced:
            if linear_rate(rate):
                unit = rate.unit_amount / rate.per_units
            else:
                unit = unit_share(charges[meter_id].get(rate.key))
            total += quantity * unit
    return total
