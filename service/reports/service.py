"""The LLM report: per window and group, requests by status, tokens, cache hit rate, average
latency and time to first token, and cost, from the LLM preset's meters.

Read as costs are (service.costs.service): the request's one connection, in one REPEATABLE
READ transaction, so the figures and the costs are one snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from service.common.auth import Principal
from service.common.errors import FieldError, InvalidInput, QueryTimeout
from service.common.money import MONEY_CONTEXT, render_quantity, to_plain_string
from service.common.timezones import zone_named
from service.costs.service import billing_periods, read_costs, render_cost, tenant_snapshot
from service.db.connections import session_driver
from service.invoices.repository import load_pricing
from service.meters.presets import LLM_PRESET
from service.reports.schemas import LlmReportOut, LlmReportQuery, LlmReportRow
from service.rollups.query import SUM_AND_COUNT, RollupQuery, read_cells
from service.usage import repository as usage_repository
from service.usage.schemas import UsageQuery
from service.usage.service import check_group_keys, parse_usage_query
from service.usage.windows import WindowError, window_boundaries

LLM_METERS = tuple(meter.event_name for meter in LLM_PRESET)
STATUSES = {"success": "success", "error": "errors", "canceled": "canceled"}
RATE_PLACES = Decimal("1e-6")
AVERAGE_PLACES = Decimal("1e-3")

Group = tuple[str | None, ...]


class LlmPresetMissing(InvalidInput):
    code, title = "llm_preset_missing", "LLM preset meters missing"


@dataclass(slots=True)
class _Figures:
    """One row being gathered."""

    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    sums: dict[str, Decimal] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _rounded(value: Decimal, places: Decimal) -> str:
    return to_plain_string(value.quantize(places, rounding=ROUND_HALF_UP, context=MONEY_CONTEXT))


class LlmReportService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def report(self, principal: Principal, query: LlmReportQuery) -> LlmReportOut:
        tenant_id = query.tenant_id or principal.tenant_id
        if tenant_id is None:
            raise _invalid("tenant_id", "tenant_id is required (this API key is not bound)")
        principal.ensure_tenant(tenant_id)
        start, end, period, size, group_by, filters = parse_usage_query(
            UsageQuery(
                start=query.start,
                end=query.end,
                period=query.period,
                window_size=query.window_size,
                group_by=query.group_by,
                filters=query.filters,
            )
        )
        asked_zone = zone_named(query.timezone) if query.timezone else None
        # One snapshot for the figures and the costs, on the request's one connection.
        tenant, zone, start, end = await tenant_snapshot(
            self.session, tenant_id, asked_zone, period, start, end
        )
        connection = await session_driver(self.session)
        records = {
            record.event_name: record for record in await usage_repository.meters(connection, None)
        }
        missing = [name for name in LLM_METERS if name not in records]
        if missing:
            message = (
                f"the LLM preset's meters {', '.join(missing)} do not exist; create them with "
                "POST /v1/meters/presets/llm"
            )
            raise LlmPresetMissing(
                message, errors=[FieldError(field=name, message="missing") for name in missing]
            )
        check_group_keys([records[name] for name in LLM_METERS], group_by, filters)
        try:
            windows = window_boundaries(start, end, size, zone)
        except WindowError as exc:
            raise _invalid(exc.field, exc.message) from exc
        periods = billing_periods(start, end, tenant.timezone)
        currency = tenant.currency
        pricing = [
            m for m in await load_pricing(self.session, tenant_id) if m.info.currency == currency
        ]

        # llm_requests by the asked keys and status; the other meters by the asked keys.
        split = list(group_by) if "status" in group_by else [*group_by, "status"]
        status_at = split.index("status")
        queries = [
            RollupQuery(
                tenant_id=tenant_id,
                meter_ids=[records["llm_requests"].id],
                edges=windows,
                group_by=split,
                filters=filters,
                aggregates=SUM_AND_COUNT,
                sums_only=True,  # only cells' sums and counts are read below
            ),
            RollupQuery(
                tenant_id=tenant_id,
                meter_ids=[records[name].id for name in LLM_METERS if name != "llm_requests"],
                edges=windows,
                group_by=group_by,
                filters=filters,
                aggregates=SUM_AND_COUNT,
                sums_only=True,  # only cells' sums and counts are read below
            ),
        ]
        try:
            requests, others = await read_cells(connection, queries)
            costs = await read_costs(
                connection, tenant_id, pricing, windows, periods, group_by, filters
            )
        except asyncpg.QueryCanceledError as exc:
            raise QueryTimeout(
                "the LLM report did not finish within the statement timeout "
                "(METERING_DB_STATEMENT_TIMEOUT_SECONDS); ask for a shorter range or fewer "
                "group_by keys"
            ) from exc

        names = {records[name].id: name for name in LLM_METERS}
        rows: dict[tuple[int, Group], _Figures] = {}
        shown = len(group_by)
        for cell in requests:
            figures = rows.setdefault((cell.window, cell.group[:shown]), _Figures())
            figures.requests += cell.count
            status = STATUSES.get(cell.group[status_at] or "")
            if status is not None:
                figures.by_status[status] = figures.by_status.get(status, 0) + cell.count
        for cell in others:
            figures = rows.setdefault((cell.window, cell.group), _Figures())
            name = names[cell.meter_id]
            figures.sums[name] = figures.sums.get(name, Decimal(0)) + cell.sum
            figures.counts[name] = figures.counts.get(name, 0) + cell.count
        row_costs: dict[tuple[int, Group], Decimal] = {}
        with localcontext(MONEY_CONTEXT):
            for key, meters in costs.rows.items():
                row_costs[key] = sum((entry[1] for entry in meters.values()), Decimal(0))
                rows.setdefault(key, _Figures())
        local = [boundary.astimezone(zone) for boundary in windows]
        return LlmReportOut(
            tenant_id=tenant_id,
            currency=currency,
            start=local[0],
            end=local[-1],
            timezone=zone.key,
            window_size=None if size is None else size.value,
            group_by=group_by,
            rows=[
                _row(
                    local,
                    window,
                    dict(zip(group_by, group, strict=True)),
                    figures,
                    row_costs.get((window, group)),
                )
                for (window, group), figures in sorted(
                    rows.items(),
                    key=lambda item: (item[0][0], [(v is not None, v or "") for v in item[0][1]]),
                )
            ],
        )


def _row(
    local: Sequence[datetime],
    window: int,
    group: dict[str, str | None],
    figures: _Figures,
    cost: Decimal | None,
) -> LlmReportRow:
    sums = figures.sums
    with localcontext(MONEY_CONTEXT):
        read = sums.get("cache_read_tokens", Decimal(0))
        write = sums.get("cache_write_5m_tokens", Decimal(0)) + sums.get(
            "cache_write_1h_tokens", Decimal(0)
        )
        hit_rate = None if read + write == 0 else _rounded(read / (read + write), RATE_PLACES)

        def average(name: str) -> str | None:
            count = figures.counts.get(name, 0)
            if count == 0:
                return None
            return _rounded(sums[name] / count, AVERAGE_PLACES)

        return LlmReportRow(
            window_start=local[window],
            window_end=local[window + 1],
            group=group,
            requests=figures.requests,
            success=figures.by_status.get("success", 0),
            errors=figures.by_status.get("errors", 0),
            canceled=figures.by_status.get("canceled", 0),
            input_tokens=render_quantity(sums.get("input_tokens", Decimal(0))),
            output_tokens=render_quantity(sums.get("output_tokens", Decimal(0))),
            cache_write_tokens=render_quantity(write),
            cache_read_tokens=render_quantity(read),
            cache_hit_rate=hit_rate,
            avg_latency_ms=average("latency_ms"),
            avg_ttft_ms=average("ttft_ms"),
            cost=render_cost(cost if cost is not None else Decimal(0)),
        )


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, errors=[FieldError(field=field, message=message)])
