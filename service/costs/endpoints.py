from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from service.common.auth import Scope, current_principal, requires
from service.common.range_parameters import RangeParameters, range_parameters
from service.costs.schemas import CostOrder, CostQuery, CostsOut
from service.costs.service import CostService
from service.usage.schemas import MAX_LIMIT
from service.usage.windows import WindowSize

ORDER_DOC = (
    "rows by cost: `cost` ascending, `-cost` descending (highest first; ties by window then group)"
)
LIMIT_DOC = (
    "keep at most this many rows (in `order_by` order, else window then group); `truncated` "
    "says whether rows were left out; `total` still covers every row"
)


class CostController(Controller):
    path = "/v1/costs"
    tags = ["costs"]
    guards = [requires(Scope.READ, Scope.BILLING)]
    dependencies = {"span": Provide(range_parameters)}

    @get(
        "/",
        summary="Rated cost of a tenant's usage over [from, to), by window and group",
        description="Usage of the billable meters that bill in `currency` (default: the "
        "tenant's), priced as the invoice prices it (tenant overrides, the most specific "
        "match, effective dates, relative prices). Tiered amounts are computed on the "
        "tenant's whole usage of each invoice period (a calendar month in the tenant's zone) "
        "and shared among groups and windows in proportion to quantity, so the costs add up "
        "to the invoice lines before rounding. Costs are exact decimals shown with 12 "
        "decimal places (half-up). Usage no price covers is listed per meter in `unpriced`, "
        "not in the rows. Windows and groups as in GET /v1/usage.",
    )
    async def get_costs(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        span: RangeParameters,
        meter: str | None = Parameter(
            default=None, query="meter", description="event_name; absent = every billable meter"
        ),
        currency: str | None = Parameter(
            default=None, query="currency", description="ISO 4217; default the tenant's"
        ),
        window_size: WindowSize | None = Parameter(default=None, query="window_size"),
        order_by: CostOrder | None = Parameter(
            default=None, query="order_by", description=ORDER_DOC
        ),
        limit: int | None = Parameter(
            default=None, query="limit", ge=1, le=MAX_LIMIT, description=LIMIT_DOC
        ),
    ) -> CostsOut:
        query = CostQuery(
            start=span.start,
            end=span.end,
            period=span.period,
            tenant_id=span.tenant_id,
            meter=meter,
            currency=currency,
            window_size=None if window_size is None else window_size.value,
            timezone=span.timezone,
            group_by=span.group_by,
            filters=span.filters,
            order_by=None if order_by is None else order_by.value,
            limit=limit,
        )
        return await CostService(db_session).costs(current_principal(request), query)
