from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from service.common.auth import Scope, current_principal, requires
from service.common.periods import PERIOD_DOC
from service.reports.schemas import LlmReportOut, LlmReportQuery
from service.reports.service import LlmReportService
from service.usage.endpoints import FILTER_DOC, FROM_DOC, GROUP_DOC, TO_DOC
from service.usage.windows import WindowSize


class ReportController(Controller):
    path = "/v1/reports"
    tags = ["reports"]
    guards = [requires(Scope.READ, Scope.BILLING)]

    @get(
        "/llm",
        summary="LLM gateway report of a tenant over [from, to), by window and group",
        description="Requests (by `status`: success, errors, canceled), input, output, cache "
        "write and cache read tokens, cache hit rate, average latency and time to first token, "
        "and cost (as GET /v1/costs, in the tenant's currency), from the LLM preset's meters "
        "(422 `llm_preset_missing` naming the missing ones). Windows and groups as in "
        "GET /v1/usage.",
    )
    async def get_llm_report(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        start: str | None = Parameter(default=None, query="from", description=FROM_DOC),
        end: str | None = Parameter(default=None, query="to", description=TO_DOC),
        period: str | None = Parameter(default=None, query="period", description=PERIOD_DOC),
        tenant_id: str | None = Parameter(
            default=None, query="tenant_id", description="optional for a tenant-bound key"
        ),
        window_size: WindowSize | None = Parameter(default=None, query="window_size"),
        timezone: str | None = Parameter(
            default=None, query="timezone", description="IANA zone; default the tenant's"
        ),
        group_by: list[str] | None = Parameter(
            default=None, query="group_by", description=GROUP_DOC
        ),
        filters: list[str] | None = Parameter(default=None, query="filter", description=FILTER_DOC),
    ) -> LlmReportOut:
        query = LlmReportQuery(
            start=start,
            end=end,
            period=period,
            tenant_id=tenant_id,
            window_size=None if window_size is None else window_size.value,
            timezone=timezone,
            group_by=group_by or [],
            filters=filters or [],
        )
        return await LlmReportService(db_session).report(current_principal(request), query)
