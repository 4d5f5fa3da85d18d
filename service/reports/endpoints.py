from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from service.common.auth import Scope, current_principal, requires
from service.common.range_parameters import RangeParameters, range_parameters
from service.reports.schemas import LlmReportOut, LlmReportQuery
from service.reports.service import LlmReportService
from service.usage.windows import WindowSize


class ReportController(Controller):
    path = "/v1/reports"
    tags = ["reports"]
    guards = [requires(Scope.READ, Scope.BILLING)]
    dependencies = {"span": Provide(range_parameters)}

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
        span: RangeParameters,
        window_size: WindowSize | None = Parameter(default=None, query="window_size"),
    ) -> LlmReportOut:
        query = LlmReportQuery(
            start=span.start,
            end=span.end,
            period=span.period,
            tenant_id=span.tenant_id,
            window_size=None if window_size is None else window_size.value,
            timezone=span.timezone,
            group_by=span.group_by,
            filters=span.filters,
        )
        return await LlmReportService(db_session).report(current_principal(request), query)
