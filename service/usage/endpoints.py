from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncEngine

from service.common.auth import Scope, current_principal, requires
from service.common.openapi_contract import PROBLEM_STATUSES
from service.common.range_parameters import RangeParameters, range_parameters
from service.usage.schemas import MAX_LIMIT, MetersUsageOut, UsageOrder, UsageOut, UsageQuery
from service.usage.service import UsageService
from service.usage.windows import WindowSize

ORDER_DOC = (
    "rows by the meter's value: `value` ascending, `-value` descending (rows without a value "
    "last, ties by window then group); with `limit`, the top N rows of each meter"
)
LIMIT_DOC = (
    "keep at most this many rows per meter (in `order_by` order, else the usual order: "
    "window, then group); `truncated` says whether rows were left out"
)


class UsageController(Controller):
    path = "/v1/usage"
    tags = ["usage"]
    guards = [requires(Scope.READ, Scope.BILLING)]
    dependencies = {"span": Provide(range_parameters)}

    @get(
        "/",
        summary="Usage of a tenant over [from, to), by window and group",
        opt={PROBLEM_STATUSES: ["404"]},  # unknown tenant
        description="With `meter`: `{meter, aggregation, rows}`; without: every meter, "
        "`{meters: [{meter, aggregation, rows}, ...]}`. Windows (`hour`, `day`, `month`) follow "
        "the calendar of `timezone` (default: the tenant's), DST included; the first and last "
        "are clipped to the range; empty windows are left out. Without `window_size`, one row "
        "per group. An unknown meter is a 422 naming `meter`. `order_by=value|-value` with "
        "`limit` keeps each meter's top N rows; `truncated` is true when rows were left out. "
        "`period` (e.g. `this_month`, `7d`, `2026-11`) stands for `from`/`to`, resolved in "
        "`timezone`; given with either, it is a 422. The answer echoes the resolved range.",
    )
    async def get_usage(
        self,
        request: Request[Any, Any, Any],
        db_engine: AsyncEngine,
        span: RangeParameters,
        meter: str | None = Parameter(
            default=None, query="meter", description="event_name; absent = every meter"
        ),
        window_size: WindowSize | None = Parameter(default=None, query="window_size"),
        order_by: UsageOrder | None = Parameter(
            default=None, query="order_by", description=ORDER_DOC
        ),
        limit: int | None = Parameter(
            default=None, query="limit", ge=1, le=MAX_LIMIT, description=LIMIT_DOC
        ),
    ) -> UsageOut | MetersUsageOut:
        query = UsageQuery(
            start=span.start,
            end=span.end,
            period=span.period,
            tenant_id=span.tenant_id,
            meter=meter,
            window_size=None if window_size is None else window_size.value,
            timezone=span.timezone,
            group_by=span.group_by,
            filters=span.filters,
            order_by=None if order_by is None else order_by.value,
            limit=limit,
        )
        return await UsageService(db_engine).usage(current_principal(request), query)

    @get(
        "/summary",
        summary="Every meter's totals for a tenant over [from, to)",
        opt={PROBLEM_STATUSES: ["404"]},  # unknown tenant
        description="One block per meter (meters without usage have no rows), one row per group. "
        "`period` stands for `from`/`to` as in `/v1/usage`, resolved in `timezone`.",
    )
    async def get_usage_summary(
        self,
        request: Request[Any, Any, Any],
        db_engine: AsyncEngine,
        span: RangeParameters,
    ) -> MetersUsageOut:
        query = UsageQuery(
            start=span.start,
            end=span.end,
            period=span.period,
            tenant_id=span.tenant_id,
            timezone=span.timezone,
            group_by=span.group_by,
            filters=span.filters,
        )
        return await UsageService(db_engine).summary(current_principal(request), query)
