from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.budgets.schemas import BudgetCheck, BudgetCreate, BudgetOut
from service.budgets.service import BudgetService, check
from service.common.auth import Scope, current_principal, requires
from service.common.schemas import DEFAULT_LIMIT, Limit, Page
from service.settings import Settings

BILLING = requires(Scope.BILLING)


class BudgetController(Controller):
    path = "/v1/budgets"
    tags = ["budgets"]

    @post(
        "/",
        summary="Create a budget on a meter's quantity, per day or month of the tenant's zone",
        guards=[BILLING],
        description="Usage accepted from the budget's creation on counts. Thresholds "
        "(default 80 and 100 percent) each emit one budget.threshold_reached webhook per "
        "period.",
    )
    async def create_budget(
        self,
        data: BudgetCreate,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
    ) -> BudgetOut:
        return await BudgetService(db_session, settings).create(data, current_principal(request))

    @get("/", summary="List budgets", guards=[BILLING])
    async def list_budgets(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
        cursor: str | None = None,
        limit: Limit = DEFAULT_LIMIT,
        tenant_id: str | None = Parameter(default=None, query="tenant_id"),
    ) -> Page[BudgetOut]:
        return await BudgetService(db_session, settings).list(
            tenant_id, cursor, limit, current_principal(request)
        )

    @get(
        "/check",
        summary="May this caller go on? Every matching budget in its current period",
        guards=[requires(Scope.INGEST, Scope.READ)],
        description="Budgets match when each attribution field they are scoped to equals the "
        "one given. `allowed` is false when any is used up. Reads running totals kept by "
        "ingestion, so it includes every event acknowledged before the call.",
    )
    async def check_budgets(
        self,
        request: Request[Any, Any, Any],
        db_engine: AsyncEngine,
        tenant_id: str = Parameter(query="tenant_id"),
        api_key_id: str | None = Parameter(default=None, query="api_key_id"),
        user_id: str | None = Parameter(default=None, query="user_id"),
        project_id: str | None = Parameter(default=None, query="project_id"),
        org_id: str | None = Parameter(default=None, query="org_id"),
        model: str | None = Parameter(default=None, query="model"),
    ) -> BudgetCheck:
        attribution = {
            "api_key_id": api_key_id,
            "user_id": user_id,
            "project_id": project_id,
            "org_id": org_id,
            "model": model,
        }
        return await check(db_engine, tenant_id, attribution, current_principal(request))

    @get("/{budget_id:uuid}", summary="Get a budget", guards=[BILLING])
    async def get_budget(
        self,
        budget_id: uuid.UUID,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
    ) -> BudgetOut:
        return await BudgetService(db_session, settings).get(budget_id, current_principal(request))

    @delete("/{budget_id:uuid}", summary="Delete a budget", status_code=204, guards=[BILLING])
    async def delete_budget(
        self,
        budget_id: uuid.UUID,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
    ) -> None:
        await BudgetService(db_session, settings).delete(budget_id, current_principal(request))
