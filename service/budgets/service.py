"""Budget rules: creation, listing, deletion and the check a gateway calls. Services never
commit."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from service.budgets.models import Budget
from service.budgets.repository import BudgetRepository
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
from service.common.money import render_quantity
from service.common.schemas import Page, decode_cursor, encode_cursor
from service.meters.repository import MeterRepository
from service.meters.service import exact_decimal
from service.settings import Settings
from service.tenants.repository import TenantRepository

SCOPE_FIELDS = ("api_key_id", "user_id", "project_id", "org_id", "model")
# Meters whose quantities add up: a budget on a `last` meter would cap a gauge, not usage.
BUDGETABLE = ("sum", "count")


def _invalid(field: str, message: str, detail: str) -> InvalidInput:
    return InvalidInput(detail, errors=[FieldError(field=field, message=message)])


def budget_out(budget: Budget, meter: str) -> BudgetOut:
    return BudgetOut(
        id=budget.id,
        tenant_id=budget.tenant_id,
        name=budget.name,
        period=budget.period,
        limit=LimitOut(meter=meter, quantity=render_quantity(budget.limit_quantity)),
        scope=BudgetScope(**{name: getattr(budget, name) for name in SCOPE_FIELDS}),
        thresholds_percent=list(budget.thresholds_percent),
        created_at=budget.created_at,
    )


class BudgetService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.budgets = BudgetRepository(session)
        self.meters = MeterRepository(session)
        self.tenants = TenantRepository(session)
        self.settings = settings

    async def create(self, data: BudgetCreate, principal: Principal) -> BudgetOut:
        principal.ensure_tenant(data.tenant_id)
        limit = data.limit
        if limit.cost is not None:
            # The seam for spend budgets: they need the costs GET /v1/costs computes (price
            # resolution as invoices), kept as a running total like quantities.
            raise _invalid(
                "limit.cost",
                "not available yet",
                "cost budgets are not available in this version; cap a meter's quantity with "
                '{"meter": ..., "quantity": ...}',
            )
        if limit.meter is None or limit.quantity is None:
            raise _invalid(
                "limit",
                "needs meter and quantity",
                'limit must be {"meter": "<event_name>", "quantity": "<decimal>"}',
            )
        quantity = exact_decimal(limit.quantity, "limit.quantity", positive=True)
        if await self.tenants.get(data.tenant_id) is None:
            raise _invalid(
                "tenant_id", "unknown tenant", f"tenant '{data.tenant_id}' does not exist"
            )
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
        thresholds = sorted(set(data.thresholds_percent))
        scope = msgspec.to_builtins(data.scope or BudgetScope())
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
        return budget_out(budget, meter.event_name)

    async def _budget(self, budget_id: uuid.UUID, principal: Principal) -> Budget:
        budget = await self.budgets.get(budget_id)
        if budget is None:
            raise NotFound(f"budget '{budget_id}' does not exist")
        principal.ensure_tenant(budget.tenant_id)
        return budget

    async def _meter_name(self, meter_id: int) -> str:
        meter = await self.meters.get_by_id(meter_id)
        assert meter is not None  # meters are archived, never deleted
        return meter.event_name

    async def get(self, budget_id: uuid.UUID, principal: Principal) -> BudgetOut:
        budget = await self._budget(budget_id, principal)
        return budget_out(budget, await self._meter_name(budget.meter_id))

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
        items = [budget_out(row, await self._meter_name(row.meter_id)) for row in rows[:limit]]
        next_cursor = (
            encode_cursor([items[-1].created_at.isoformat(), str(items[-1].id)])
            if len(rows) > limit
            else None
        )
        return Page(items=items, next_cursor=next_cursor)

    async def check(
        self, tenant_id: str, attribution: dict[str, str | None], principal: Principal
    ) -> BudgetCheck:
        """Every budget of the tenant whose scope the attribution matches, in its current
        period; one statement (see BudgetRepository.standing)."""
        principal.ensure_tenant(tenant_id)
        budgets = []
        for row in await self.budgets.standing(tenant_id, attribution):
            remaining = max(row.limit_quantity - row.used, Decimal(0))
            budgets.append(
                BudgetStanding(
                    id=row.id,
                    name=row.name,
                    used=render_quantity(row.used),
                    limit=LimitOut(meter=row.meter, quantity=render_quantity(row.limit_quantity)),
                    remaining=render_quantity(remaining),
                    period_start=row.period_start,
                    period_end=row.period_end,
                    exhausted=row.used >= row.limit_quantity,
                )
            )
        return BudgetCheck(allowed=not any(b.exhausted for b in budgets), budgets=budgets)
