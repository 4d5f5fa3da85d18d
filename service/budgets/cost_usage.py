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


async def costs_used(
    connection: asyncpg.Connection,
    tenant_id: str,
    budgets: Sequence[CostBudget],
    pricing: Sequence[MeterPricing] | None = None,
) -> list[Decimal]:
    """The exact spend of each of `tenant_id`'s cost budgets in its `period_start`'s period:
    one read of their cells, one of the month of each meter a non-linear rate needs.

    Raises AmbiguousPriceError or PriceCycleError as costs do."""
    if not budgets:
        return []
    if pricing is None:
        pricing = await load_pricing_driver(connection, tenant_id)
    meters = priced_meters(pricing, budgets[0].currency)
    by_id = {meter.meter_id: meter for meter in meters}
    cells = await cost_cells(connection, tenant_id, [(b.id, b.period_start) for b in budgets])
    plans = [
        plan_cells(cells.get((b.id, b.period_start), []), by_id, tenant_id=tenant_id)
        for b in budgets
    ]
    months = {
        (budget.id, budget.period_start): _month(budget.period_start, budget.timezone)
        for budget, plan in zip(budgets, plans, strict=True)
        if plan.months_needed and not plan.split
    }
    wanted = sorted(
        {
            (meter_id, months[(budget.id, budget.period_start)])
            for budget, plan in zip(budgets, plans, strict=True)
            if (budget.id, budget.period_start) in months
            for meter_id in plan.months_needed
        }
    )
    queries = [period_query(tenant_id, by_id[meter_id], *month) for meter_id, month in wanted]
    charges = {
        key: rate_period(by_id[key[0]], tenant_id, query, found).charges
        for key, query, found in zip(
            wanted, queries, await read_cells(connection, queries), strict=True
        )
    }
    spends = []
    for budget, plan in zip(budgets, plans, strict=True):
        if plan.split:
            spends.append(await _from_rollups(connection, budget, meters))
            continue
        key = (budget.id, budget.period_start)
        needed = {meter_id: charges[(meter_id, months[key])] for meter_id in plan.months_needed}
        spends.append(spent(plan, needed))
    return spends


def _month(instant: datetime, timezone: str) -> tuple[datetime, datetime]:
    """The invoice period (calendar month of `timezone`) holding `instant`."""
    local = instant.astimezone(ZoneInfo(timezone))
    return invoice_period(f"{local.year:04d}-{local.month:02d}", timezone)


async def _from_rollups(
    connection: asyncpg.Connection, budget: CostBudget, meters: Sequence[MeterPricing]
) -> Decimal:
    """The period's cost of the budget's scope, read as GET /v1/costs reads it."""
    start, end = budget.period_start, budget.period_end
    costs = await read_costs(
        connection,
        budget.tenant_id,
        meters,
        [start, end],
        billing_periods(start, end, budget.timezone),
        [],
        {name: [value] for name, value in budget.scope.items()},
    )
    with localcontext(MONEY_CONTEXT):
        return sum((entry[1] for row in costs.rows.values() for entry in row.values()), Decimal(0))
