"""Costs: validate the query, read the usage of the billable meters of one currency from the
rollup store, price it as the invoice does and share each charge among groups and windows
(`allocation`), shape the answer.

Everything is read in one REPEATABLE READ transaction, so in one snapshot: the billing periods
as the invoice reads them (each calendar month of the tenant's zone that the range touches,
whole, so tiers are filled by the whole month's usage) and the usage shown (the range, grouped
by the asked keys and the keys the prices match on, filtered, split at every window, month and
price boundary). Services never commit: the request's session ends the read-only transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from functools import partial
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from service.common.auth import Principal
from service.common.errors import FieldError, InvalidInput, NotFound, QueryTimeout
from service.common.gc_pause import no_collection
from service.common.money import MONEY_CONTEXT, is_currency, render_quantity, to_plain_string
from service.common.periods import Period
from service.common.timezones import zone_named
from service.costs.allocation import (
    Costs,
    Group,
    add_weighted,
    allocate,
    allocate_shared,
    rate_period,
    weighting,
)
from service.costs.schemas import (
    CostOrder,
    CostQuery,
    CostRow,
    CostsOut,
    MeterCost,
    UnpricedQuantity,
)
from service.db.connections import session_driver
from service.invoices.errors import AmbiguousPrices
from service.invoices.period_usage import period_query
from service.invoices.repository import MeterPricing, load_pricing
from service.invoices.service import invoice_period
from service.meters.pricing import AmbiguousPriceError, price_boundaries
from service.rollups.query import (
    ALL_AGGREGATES,
    SUM_AND_COUNT,
    RollupQuery,
    read_cells,
    read_weighted,
)
from service.tenants.models import Tenant
from service.tenants.repository import TenantRepository
from service.usage import repository as usage_repository
from service.usage.schemas import MAX_LIMIT, UsageQuery
from service.usage.service import check_group_keys, parse_usage_query, period_range
from service.usage.windows import WindowError, WindowSize, window_boundaries

# Costs are exact; each figure is shown quantized to 12 decimal places, half-up.
COST_PLACES = Decimal("1e-12")


def render_cost(value: Decimal) -> str:
    """`value` with exactly 12 decimal places, half-up ("0.000001250000"); never "-0"."""
    shown = value.quantize(COST_PLACES, rounding=ROUND_HALF_UP, context=MONEY_CONTEXT)
    return to_plain_string(shown.copy_abs() if shown.is_zero() else shown)


class CostService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def costs(self, principal: Principal, query: CostQuery) -> CostsOut:
        tenant_id = query.tenant_id or principal.tenant_id
        if tenant_id is None:
            raise _invalid("tenant_id", "tenant_id is required (this API key is not bound)")
        principal.ensure_tenant(tenant_id)
        start, end, period, size, group_by, filters, order = _parse(query)
        # Checked before the database: a bad name is the caller's mistake, whatever happens next.
        asked_zone = zone_named(query.timezone) if query.timezone else None
        tenant, zone, start, end = await tenant_snapshot(
            self.session, tenant_id, asked_zone, period, start, end
        )
        currency = query.currency or tenant.currency
        pricing = await load_pricing(self.session, tenant_id)
        connection = await session_driver(self.session)
        # Memory enough to hash a month's (key x model) cells without spilling to disk (the
        # default 4 MB would), for this transaction only.
        await connection.execute("SET LOCAL work_mem = '64MB'")
        meters = await self._meters(connection, pricing, query.meter, currency)
        records = await usage_repository.meters(connection, None)
        priced_names = {meter.info.event_name for meter in meters}
        check_group_keys(
            [record for record in records if record.event_name in priced_names], group_by, filters
        )
        try:
            windows = window_boundaries(start, end, size, zone)
        except WindowError as exc:
            raise _invalid(exc.field, exc.message) from exc
        periods = billing_periods(start, end, tenant.timezone)

        try:
            costs = await read_costs(
                connection, tenant_id, meters, windows, periods, group_by, filters
            )
        except asyncpg.QueryCanceledError as exc:
            raise QueryTimeout(
                "the costs query did not finish within the statement timeout "
                "(METERING_DB_STATEMENT_TIMEOUT_SECONDS); ask for a shorter range or fewer "
                "group_by keys"
            ) from exc
        with no_collection():  # no await inside: only this request's objects are being built
            local = [boundary.astimezone(zone) for boundary in windows]
            ordered, total = _ordered(costs, order)
            truncated = query.limit is not None and len(ordered) > query.limit
            if query.limit is not None:
                ordered = ordered[: query.limit]
            rows = [_row(*entry, local, group_by) for entry in ordered]
        return CostsOut(
            tenant_id=tenant_id,
            currency=currency,
            start=local[0],
            end=local[-1],
            timezone=zone.key,
            window_size=None if size is None else size.value,
            group_by=group_by,
            meter=query.meter,
            order_by=None if order is None else order.value,
            limit=query.limit,
            rows=rows,
            total=render_cost(total),
            unpriced=[
                UnpricedQuantity(meter=name, quantity=render_quantity(quantity))
                for name, quantity in sorted(costs.unpriced.items())
                if quantity != 0
            ],
            truncated=truncated,
        )

    async def _meters(
        self,
        connection: asyncpg.Connection,
        pricing: Sequence[MeterPricing],
        name: str | None,
        currency: str,
    ) -> list[MeterPricing]:
        """The billable meters that bill in `currency` (only `name` when given)."""
        if name is None:
            return [meter for meter in pricing if meter.info.currency == currency]
        found = [meter for meter in pricing if meter.info.event_name == name]
        if not found:
            if await usage_repository.meters(connection, name):
                raise _invalid("meter", f"meter '{name}' is not billable: it has no cost")
            raise _invalid("meter", f"no meter has event_name '{name}'")
        if found[0].info.currency != currency:
            raise _invalid(
                "currency",
                f"meter '{name}' bills in {found[0].info.currency}, not {currency}; "
                f"ask for currency={found[0].info.currency}",
            )
        return found


async def tenant_snapshot(
    session: AsyncSession,
    tenant_id: str,
    asked_zone: ZoneInfo | None,
    period: Period | None,
    start: datetime | None,
    end: datetime | None,
) -> tuple[Tenant, ZoneInfo, datetime, datetime]:
    """Start the request's one REPEATABLE READ transaction (the tenant, its prices, the months
    and the usage read after it are one snapshot, so shares add up exactly; one connection per
    request, as a second could exhaust the pool), then the tenant (404 when unknown), the zone
    of the answer (asked, else the tenant's) and the range (`period` resolved in that zone,
    else [start, end))."""
    await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    tenant = await TenantRepository(session).get(tenant_id)
    if tenant is None:
        raise NotFound(f"tenant '{tenant_id}' does not exist")
    zone = asked_zone or zone_named(tenant.timezone)
    if period is not None:
        start, end = period_range(period, zone)
    assert start is not None and end is not None  # parse_usage_query: a period or both
    return tenant, zone, start, end


async def read_costs(
    connection: asyncpg.Connection,
    tenant_id: str,
    meters: Sequence[MeterPricing],
    windows: Sequence[datetime],
    periods: Sequence[tuple[datetime, datetime]],
    group_by: Sequence[str],
    filters: dict[str, list[str]],
) -> Costs:
    """The costs of `meters`' usage over `windows` by `group_by`, filtered: each meter's months
    (`periods`) rated, then the shown usage's share of the charges, summed by PostgreSQL with
    per-unit weights for sum and count meters (only answer rows come back), cell by cell for
    `last` meters (their billed value is one event's). Raises AmbiguousPrices."""
    costs = Costs()
    queries: list[RollupQuery] = []
    for meter in meters:
        queries += [period_query(tenant_id, meter, *period) for period in periods]
        if meter.info.aggregation in SHARED:
            queries.append(shared_query(tenant_id, meter, windows, periods, group_by, filters))
        else:
            queries.append(shown_query(tenant_id, meter, windows, periods, group_by, filters))
    step = len(periods) + 1

    def read(index: int) -> bool:
        # The shown usage of sum and count meters is read weighted, below.
        weighted = meters[index // step].info.aggregation in ("sum", "count")
        return index % step < len(periods) or not weighted

    wanted = [query for index, query in enumerate(queries) if read(index)]
    found = iter(await read_cells(connection, wanted))
    cells = [next(found) if read(index) else [] for index in range(len(queries))]
    for index, meter in enumerate(meters):
        first = index * step
        shown = queries[first + len(periods)]
        try:
            rated = [
                rate_period(meter, tenant_id, queries[first + i], cells[first + i])
                for i in range(len(periods))
            ]
            if meter.info.aggregation not in ("sum", "count"):
                # `last` bills the period's latest value; `max` and `unique_count` share their
                # charge by each piece's own quantity. Both place cells one by one.
                place = (
                    partial(allocate_shared, filters=filters)
                    if meter.info.aggregation in SHARED
                    else allocate
                )
                place(
                    costs,
                    meter,
                    tenant_id=tenant_id,
                    query=shown,
                    cells=cells[first + len(periods)],
                    shown=len(group_by),
                    windows=windows,
                    periods=rated,
                )
                continue
            weights = weighting(
                meter,
                tenant_id=tenant_id,
                query=shown,
                shown=len(group_by),
                windows=windows,
                periods=[
                    (queries[first + i], cells[first + i], rated[i]) for i in range(len(periods))
                ],
            )
        except AmbiguousPriceError as exc:
            raise AmbiguousPrices(
                f"meter '{meter.info.event_name}': {exc}",
                errors=[FieldError(field="prices", message="ambiguous")],
            ) from exc
        add_weighted(costs, meter.info.event_name, await read_weighted(connection, shown, weights))
    return costs


def billing_periods(
    start: datetime, end: datetime, timezone: str
) -> list[tuple[datetime, datetime]]:
    """The invoice periods (calendar months of the tenant's zone) that [start, end) touches."""
    local = start.astimezone(ZoneInfo(timezone))
    year, month = local.year, local.month
    periods: list[tuple[datetime, datetime]] = []
    while True:
        try:
            period = invoice_period(f"{year:04d}-{month:02d}", timezone)
        except InvalidInput as exc:
            raise _invalid("from", f"costs cover invoice periods only: {exc.detail}") from exc
        if period[0] >= end:
            return periods
        if period[1] > start:
            periods.append(period)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def shown_query(
    tenant_id: str,
    meter: MeterPricing,
    windows: Sequence[datetime],
    periods: Sequence[tuple[datetime, datetime]],
    group_by: Sequence[str],
    filters: dict[str, list[str]],
) -> RollupQuery:
    """The usage the answer shows, for one meter: grouped by the asked keys, then the keys its
    prices match on (to price each piece), split at every window, period and price boundary."""
    start, end = windows[0], windows[-1]
    edges = {*windows, *price_boundaries(meter.prices, start, end)}
    edges |= {instant for period in periods for instant in period if start < instant < end}
    return RollupQuery(
        tenant_id=tenant_id,
        meter_ids=[meter.meter_id],
        edges=sorted(edges),
        group_by=[*group_by, *(key for key in meter.group_keys if key not in group_by)],
        filters=filters,
        aggregates=ALL_AGGREGATES if meter.info.aggregation == "last" else SUM_AND_COUNT,
        sums_only=meter.info.aggregation in ("sum", "count"),
    )


# Meters whose charges are shared in proportion to each piece's own quantity
# (service.costs.allocation.allocate_shared).
SHARED = ("max", "unique_count")


def shared_query(
    tenant_id: str,
    meter: MeterPricing,
    windows: Sequence[datetime],
    periods: Sequence[tuple[datetime, datetime]],
    group_by: Sequence[str],
    filters: dict[str, list[str]],
) -> RollupQuery:
    """The pieces a `max` or `unique_count` meter's charges are shared among: the whole of
    every period touched (not only the answer's range), without filters, grouped by the
    asked keys, the price keys and the filter keys, split at every window, period and price
    boundary; distinct values counted per piece for a unique_count meter."""
    start, end = periods[0][0], periods[-1][1]
    edges = {*windows, *price_boundaries(meter.prices, start, end), start, end}
    edges |= {instant for period in periods for instant in period}
    keys = [*group_by]
    keys += [key for key in meter.group_keys if key not in keys]
    keys += [key for key in filters if key not in keys]
    return RollupQuery(
        tenant_id=tenant_id,
        meter_ids=[meter.meter_id],
        edges=sorted(edges),
        group_by=keys,
        aggregates=SUM_AND_COUNT,
        distinct_key=meter.info.unique_key,
    )


_Entry = tuple[tuple[int, Group], dict[str, list[Decimal]], Decimal]


def _ordered(costs: Costs, order: CostOrder | None) -> tuple[list[_Entry], Decimal]:
    """(window and group, meters, exact cost) of every row in window then group order (absent
    values first, then by code point), or by cost when `order` says so (ties keep that order),
    and the total of every row. Only the rows an answer keeps are then rendered (`_row`): a
    top 100 of 10,000 keys renders 100."""
    entries: list[_Entry] = []
    total = Decimal(0)
    with localcontext(MONEY_CONTEXT):
        for key, meters in sorted(
            costs.rows.items(),
            key=lambda item: (item[0][0], [(v is not None, v or "") for v in item[0][1]]),
        ):
            cost = sum((entry[1] for entry in meters.values()), Decimal(0))
            total += cost
            entries.append((key, meters, cost))
    if order is not None:
        descending = order is CostOrder.COST_DESCENDING
        entries.sort(key=lambda entry: -entry[2] if descending else entry[2])  # stable
    return entries, total


def _row(
    key: tuple[int, Group],
    meters: dict[str, list[Decimal]],
    cost: Decimal,
    boundaries: Sequence[datetime],
    group_by: Sequence[str],
) -> CostRow:
    window, group = key
    return CostRow(
        window_start=boundaries[window],
        window_end=boundaries[window + 1],
        group=dict(zip(group_by, group, strict=True)),
        cost=render_cost(cost),
        meters=[
            MeterCost(meter=name, quantity=render_quantity(entry[0]), cost=render_cost(entry[1]))
            for name, entry in sorted(meters.items())
        ],
    )


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, errors=[FieldError(field=field, message=message)])


def _parse(
    query: CostQuery,
) -> tuple[
    datetime | None,
    datetime | None,
    Period | None,
    WindowSize | None,
    list[str],
    dict[str, list[str]],
    CostOrder | None,
]:
    """Everything that needs no database, as usage queries check it, plus `currency`,
    `order_by` and `limit`; all problems at once."""
    errors: list[FieldError] = []
    try:
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
    except InvalidInput as exc:
        errors += exc.errors or []
    if query.currency is not None and not is_currency(query.currency):
        errors.append(
            FieldError(
                field="currency",
                message=f"'{query.currency[:16]}' is not an ISO 4217 code such as USD or EUR",
            )
        )
    order: CostOrder | None = None
    if query.order_by:
        try:
            order = CostOrder(query.order_by)
        except ValueError:
            errors.append(
                FieldError(
                    field="order_by",
                    message=f"order_by is cost or -cost (descending), got '{query.order_by}'",
                )
            )
    if query.limit is not None and not 1 <= query.limit <= MAX_LIMIT:
        errors.append(
            FieldError(field="limit", message=f"limit is 1 to {MAX_LIMIT}, got {query.limit}")
        )
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)
    return start, end, period, size, group_by, filters, order
