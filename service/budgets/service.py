"""Budget rules: creation, listing, deletion and the check a gateway calls. Services never
commit."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.budgets.cost_usage import costs_used
from service.budgets.models import Budget
from service.budgets.repository import BudgetRepository, standing
from service.budgets.schemas import (
    BudgetCheck,
    BudgetCreate,
    BudgetOut,
    BudgetScope,
    BudgetStanding,
    LimitOut,
)
from service.common.auth import Principal
from service.common.errors import FieldError, InvalidInput, NotFound
from service.common.money import is_currency, render_quantity
from service.common.schemas import Page, decode_cursor, encode_cursor
from service.costs.service import render_cost
from service.db.connections import driver_connection
from service.invoices.errors import AmbiguousPrices
from service.meters.pricing import AmbiguousPriceError
from service.meters.repository import MeterRepository
from service.meters.service import exact_decimal
from service.settings import Settings
from service.tenants.repository import TenantRepository

SCOPE_FIELDS = ("api_key_id", "user_id", "project_id", "org_id", "model")
# Meters whose quantities add up: a budget on a `last` meter would cap a gauge, not usage.
BUDGETABLE = ("sum", "count")


def _invalid(field: str, message: str, detail: str) -> InvalidInput:
    return InvalidInput(detail, errors=[FieldError(field=field, message=message)])


def limit_out(
    limit_quantity: Decimal | None, limit_cost: Decimal | None, meter: str | None, currency: str
) -> LimitOut:
    if limit_cost is not None:
        return LimitOut(cost=render_quantity(limit_cost), currency=currency)
    assert limit_quantity is not None  # a check constraint: one kind of limit
    return LimitOut(meter=meter, quantity=render_quantity(limit_quantity))


def budget_out(budget: Budget, meter: str | None, currency: str) -> BudgetOut:
    return BudgetOut(
        id=budget.id,
        tenant_id=budget.tenant_id,
        name=budget.name,
        period=budget.period,
        limit=limit_out(budget.limit_quantity, budget.limit_cost, meter, currency),
        scope=BudgetScope(**{name: getattr(budget, name) for name in SCOPE_FIELDS}),
        thresholds_percent=list(budget.thresholds_percent),
        created_at=budget.created_at,
    )


class BudgetService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.budgets = BudgetRepository(session)
        self.meters = MeterRepository(session)
        self.tenants = TenantRepository(session)
        self.settings = settings

    async def create(self, data: BudgetCreate, principal: Principal) -> BudgetOut:
        principal.ensure_tenant(data.tenant_id)
        limit = data.limit
        if limit.cost is not None and (limit.meter is not None or limit.quantity is not None):
            raise _invalid(
                "limit",
                "a cost or a meter's quantity, not both",
                'limit is either {"cost": "<decimal>"} or {"meter": "<event_name>", '
                '"quantity": "<decimal>"}, not both',
            )
        if limit.cost is None and (limit.meter is None or limit.quantity is None):
            raise _invalid(
                "limit",
                "needs meter and quantity, or cost",
                'limit must be {"meter": "<event_name>", "quantity": "<decimal>"} or '
                '{"cost": "<decimal>"}',
            )
        if limit.currency is not None:
            if limit.cost is None:
                raise _invalid(
                    "limit.currency",
                    "only with cost",
                    "limit.currency goes with a cost limit only",
                )
            if not is_currency(limit.currency):
                raise _invalid(
                    "limit.currency",
                    "not an ISO 4217 code",
                    f"limit.currency '{limit.currency[:16]}' is not an ISO 4217 code such as USD",
                )
        cost = (
            None if limit.cost is None else exact_decimal(limit.cost, "limit.cost", positive=True)
        )
        quantity = (
            None
            if limit.quantity is None
            else exact_decimal(limit.quantity, "limit.quantity", positive=True)
        )
        tenant = await self.tenants.get(data.tenant_id)
        if tenant is None:
            raise _invalid(
                "tenant_id", "unknown tenant", f"tenant '{data.tenant_id}' does not exist"
            )
        thresholds = sorted(set(data.thresholds_percent))
        scope = msgspec.to_builtins(data.scope or BudgetScope())
        if cost is not None:
            if limit.currency is not None and limit.currency != tenant.currency:
                raise _invalid(
                    "limit.currency",
                    f"not the tenant's currency ({tenant.currency})",
                    f"a cost budget counts in its tenant's currency, {tenant.currency}, not "
                    f"{limit.currency}",
                )
            budget = await self.budgets.add(
                Budget(
                    tenant_id=data.tenant_id,
                    id=uuid.uuid4(),
                    name=data.name,
                    period=data.period,
                    limit_cost=cost,
                    thresholds_percent=thresholds,
                    **scope,
                )
            )
            return budget_out(budget, None, tenant.currency)
        assert limit.meter is not None
        meter = await self.meters.get(limit.meter)
        if meter is None:
            raise _invalid("limit.meter", "unknown meter", f"meter '{limit.meter}' does not exist")
        if meter.aggregation not in BUDGETABLE:
            raise _invalid(
                "limit.meter",
                "not a sum or count meter",
                f"meter '{meter.event_name}' aggregates by {meter.aggregation}; budgets cap sum "
                "or count meters",
            )
        budget = await self.budgets.add(
            Budget(
                tenant_id=data.tenant_id,
                id=uuid.uuid4(),
                name=data.name,
                period=data.period,
                meter_id=meter.id,
                aggregation=meter.aggregation,
                limit_quantity=quantity,
                thresholds_percent=thresholds,
                **scope,
            )
        )
        return budget_out(budget, meter.event_name, tenant.currency)

    async def _budget(self, budget_id: uuid.UUID, principal: Principal) -> Budget:
        budget = await self.budgets.get(budget_id)
        if budget is None:
            raise NotFound(f"budget '{budget_id}' does not exist")
        principal.ensure_tenant(budget.tenant_id)
        return budget

    async def _meter_name(self, meter_id: int | None) -> str | None:
        if meter_id is None:
            return None  # a cost budget
        meter = await self.meters.get_by_id(meter_id)
        assert meter is not None  # meters are archived, never deleted
        return meter.event_name

    async def _currency(self, tenant_id: str) -> str:
        tenant = await self.tenants.get(tenant_id)
        assert tenant is not None  # budgets go with their tenant
        return tenant.currency

    async def get(self, budget_id: uuid.UUID, principal: Principal) -> BudgetOut:
        budget = await self._budget(budget_id, principal)
        return budget_out(
            budget, await self._meter_name(budget.meter_id), await self._currency(budget.tenant_id)
        )

    async def delete(self, budget_id: uuid.UUID, principal: Principal) -> None:
        budget = await self._budget(budget_id, principal)
        await self.budgets.delete(budget.tenant_id, budget.id)

    async def list(
        self, tenant_id: str | None, cursor: str | None, limit: int, principal: Principal
    ) -> Page[BudgetOut]:
        if tenant_id is not None:
            principal.ensure_tenant(tenant_id)
        else:
            tenant_id = principal.tenant_id
        after = None
        if cursor:
            created, budget_id = decode_cursor(cursor, 2)
            try:
                after = (datetime.fromisoformat(created), uuid.UUID(budget_id))
            except (TypeError, ValueError) as exc:
                raise _invalid(
                    "cursor", "not one this API returned", "cursor is not one this API returned"
                ) from exc
        rows = await self.budgets.list_after(tenant_id, after, limit + 1)
        currencies: dict[str, str] = {}
        items = []
        for row in rows[:limit]:
            if row.tenant_id not in currencies:
                currencies[row.tenant_id] = await self._currency(row.tenant_id)
            items.append(
                budget_out(row, await self._meter_name(row.meter_id), currencies[row.tenant_id])
            )
        next_cursor = (
            encode_cursor([items[-1].created_at.isoformat(), str(items[-1].id)])
            if len(rows) > limit
            else None
        )
        return Page(items=items, next_cursor=next_cursor)


async def check(
    engine: AsyncEngine, tenant_id: str, attribution: dict[str, str | None], principal: Principal
) -> BudgetCheck:
    """Every budget of the tenant whose scope the attribution matches, in its current period.

    A gateway calls this before every request, so it is as short as it can be: one autocommit
    statement on a pooled driver connection reads the budgets and their quantity totals (see
    repository.STANDING_SQL): one round trip, no BEGIN and COMMIT, no ORM session. Only when a
    matching budget caps a cost is that read done again inside a read-only REPEATABLE READ
    transaction, with the cost budgets' cells priced in the same snapshot
    (service.budgets.cost_usage)."""
    principal.ensure_tenant(tenant_id)
    spends: dict[uuid.UUID, Decimal] = {}
    async with driver_connection(engine) as connection:
        rows = await standing(connection, tenant_id, attribution)
        if any(row.limit_cost is not None for row in rows):
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                rows = await standing(connection, tenant_id, attribution)
                priced = [row.cost_budget() for row in rows if row.limit_cost is not None]
                try:
                    found = await costs_used(connection, tenant_id, priced)
                except AmbiguousPriceError as exc:
                    raise AmbiguousPrices(
                        str(exc), errors=[FieldError(field="prices", message="ambiguous")]
                    ) from exc
            spends = {budget.id: used for budget, used in zip(priced, found, strict=True)}
    budgets = []
    for row in rows:
        if row.limit_cost is not None:
            used, limit = spends[row.id], row.limit_cost
            shown_used = render_cost(used)
            shown_remaining = render_cost(max(limit - used, Decimal(0)))
        else:
            assert row.limit_quantity is not None
            used, limit = row.used, row.limit_quantity
            shown_used = render_quantity(used)
            shown_remaining = render_quantity(max(limit - used, Decimal(0)))
        budgets.append(
            BudgetStanding(
                id=row.id,
                name=row.name,
                used=shown_used,
                limit=limit_out(row.limit_quantity, row.limit_cost, row.meter, row.currency),
                remaining=shown_remaining,
                period_start=row.period_start,
                period_end=row.period_end,
                exhausted=used >= limit,
            )
        )
    return BudgetCheck(allowed=not any(b.exhausted for b in budgets), budgets=budgets)
