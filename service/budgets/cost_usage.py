"""A cost budget's spend in one period, read and priced: its cells (service.budgets.ingest
keeps them), the tenant's prices, and for prices that are not linear the month's charges,
rated as GET /v1/costs rates them; for a period whose cells a price change splits, the budget's
usage as GET /v1/costs reads it (the rollup store, filtered by the budget's scope).

Used by the check (in its REPEATABLE READ snapshot) and by ingestion (after its statement, in
its transaction, to record the thresholds the new usage reached)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal, localcontext
from zoneinfo import ZoneInfo

import asyncpg

from service.budgets.repository import CostBudget, cost_cells
from service.budgets.spend import plan_cells, spent
from service.common.money import MONEY_CONTEXT
from service.costs.allocation import rate_period
from service.costs.service import billing_periods, read_costs
from service.invoices.period_usage import period_query
from service.invoices.repository import MeterPricing, load_pricing_driver
from service.invoices.service import invoice_period
from service.rollups.query import read_cells


def priced_meters(pricing: Sequence[MeterPricing], currency: str) -> list[MeterPricing]:
    """The meters a cost budget counts: billable (all of `pricing` is), in the tenant's
    currency."""
    return [meter for meter in pricing if meter.info.currency == currency]


async def cost_used(
    connection: asyncpg.Connection,
    budget: CostBudget,
    period_start: datetime,
    pricing: Sequence[MeterPricing] | None = None,
) -> Decimal:
    """The exact spend of `budget` in the period starting at `period_start`.

    Raises AmbiguousPriceError or PriceCycleError as costs do."""
    if pricing is None:
        pricing = await load_pricing_driver(connection, budget.tenant_id)
    meters = priced_meters(pricing, budget.currency)
    by_id = {meter.meter_id: meter for meter in meters}
    cells = await cost_cells(connection, budget.tenant_id, budget.id, period_start)
    plan = plan_cells(cells, by_id, tenant_id=budget.tenant_id)
    if plan.split:
        return await _from_rollups(connection, budget, period_start, meters)
    charges = {}
    if plan.months_needed:
        local = period_start.astimezone(ZoneInfo(budget.timezone))
        month = invoice_period(f"{local.year:04d}-{local.month:02d}", budget.timezone)
        needed = [by_id[meter_id] for meter_id in sorted(plan.months_needed)]
        queries = [period_query(budget.tenant_id, meter, *month) for meter in needed]
        for meter, query, found in zip(
            needed, queries, await read_cells(connection, queries), strict=True
        ):
            charges[meter.meter_id] = rate_period(meter, budget.tenant_id, query, found).charges
    return spent(plan, charges)


async def _from_rollups(
    connection: asyncpg.Connection,
    budget: CostBudget,
    period_start: datetime,
    meters: Sequence[MeterPricing],
) -> Decimal:
    """The period's cost of the budget's scope, read as GET /v1/costs reads it."""
    windows = [period_start, budget.period_end]
    costs = await read_costs(
        connection,
        budget.tenant_id,
        meters,
        windows,
        billing_periods(period_start, budget.period_end, budget.timezone),
        [],
        {name: [value] for name, value in budget.scope.items()},
    )
    with localcontext(MONEY_CONTEXT):
        return sum((entry[1] for row in costs.rows.values() for entry in row.values()), Decimal(0))
