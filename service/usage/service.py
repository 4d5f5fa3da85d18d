"""Usage queries: validate the query, cut [from, to) into windows of the zone, read
the rollups, shape the answer. Equal, always, to the same aggregation over the raw events."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from service.common.auth import Principal
from service.common.errors import FieldError, InvalidInput, NotFound, QueryTimeout
from service.common.gc_pause import no_collection
from service.common.periods import (
    Period,
    PeriodError,
    missing_range_errors,
    parse_period,
    range_choice_errors,
    resolve,
)
from service.common.time import QUARTER_HOUR, floor_to_quarter_hour, is_on_quarter_hour
from service.common.timezones import zone_named
from service.db.connections import driver_connection
from service.rollups.models import ATTRIBUTION_FIELDS, BUCKET_MINUTES
from service.rollups.query import RollupQuery, read_rendered
from service.usage import repository
from service.usage.repository import MeterRecord
from service.usage.schemas import (
    MAX_LIMIT,
    MetersUsageOut,
    MeterUsage,
    UsageOrder,
    UsageOut,
    UsageQuery,
    UsageRow,
)
from service.usage.windows import (
    WindowError,
    WindowSize,
    window_boundaries,
)

EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


class UsageService:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def usage(self, principal: Principal, query: UsageQuery) -> UsageOut | MetersUsageOut:
        """One meter's usage when `query.meter` is given, else every meter's, one block each."""
        answer = await self._run(principal, query)
        if query.meter is None:
            return answer
        block = answer.meters[0]
        return UsageOut(
            tenant_id=answer.tenant_id,
            meter=block.meter,
            aggregation=block.aggregation,
            unit=block.unit,
            start=answer.start,
            end=answer.end,
            window_size=answer.window_size,
            timezone=answer.timezone,
            group_by=answer.group_by,
            order_by=answer.order_by,
            limit=answer.limit,
            rows=block.rows,
            truncated=block.truncated,
        )

    async def summary(self, principal: Principal, query: UsageQuery) -> MetersUsageOut:
        """Every meter's totals over [from, to) (no windows), one block per meter."""
        return await self._run(principal, query)

    async def _run(self, principal: Principal, query: UsageQuery) -> MetersUsageOut:
        tenant_id = query.tenant_id or principal.tenant_id
        if tenant_id is None:
            raise _invalid("tenant_id", "tenant_id is required (this API key is not bound)")
        principal.ensure_tenant(tenant_id)
        start, end, period, size, group_by, filters = parse_usage_query(query)
        # Checked when parsed: a limit without order_by keeps the first rows in the usual order.
        order = UsageOrder(query.order_by) if query.order_by else None
        limit = query.limit
        # Checked before the database: a bad name is the caller's mistake, whatever happens next.
        asked_zone = zone_named(query.timezone) if query.timezone else None
        # Autocommit: three reads, each consistent on its own (the aggregate is one statement).
        async with driver_connection(self.engine) as connection:
            tenant_zone = await repository.tenant_timezone(connection, tenant_id)
            if tenant_zone is None:
                raise NotFound(f"tenant '{tenant_id}' does not exist")
            zone = asked_zone or zone_named(tenant_zone)
            if period is not None:
                start, end = period_range(period, zone)
            assert (
                start is not None and end is not None
            )  # parse_usage_query: a period or both instants
            meters = await repository.meters(connection, query.meter)
            if query.meter is not None and not meters:
                raise _invalid("meter", f"no meter has event_name '{query.meter}'")
            check_group_keys(meters, group_by, filters)
            try:
                boundaries = window_boundaries(start, end, size, zone)
            except WindowError as exc:
                raise _invalid(exc.field, exc.message) from exc
            # unique_count meters count distinct values of their own key: one query each.
            plain = [m.id for m in meters if m.unique_key is None]
            rollup_queries = [
                RollupQuery(
                    tenant_id=tenant_id,
                    meter_ids=ids,
                    edges=boundaries,
                    group_by=group_by,
                    filters=filters,
                    distinct_key=key,
                )
                for ids, key in [
                    *([(plain, None)] if plain else []),
                    *(([m.id], m.unique_key) for m in meters if m.unique_key is not None),
                ]
            ]
            try:
                cells = [
                    cell
                    for rollup_query in rollup_queries
                    for cell in await read_rendered(connection, rollup_query)
                ]
            except asyncpg.QueryCanceledError as exc:
                # The statement timeout cut this read short: the database is up, the query is
                # too heavy (say, daily windows grouped by user in a zone whose midnight is
                # not a UTC midnight, over a busy month). Not database_unavailable.
                raise QueryTimeout(
                    "the usage query did not finish within the statement timeout "
                    "(METERING_DB_STATEMENT_TIMEOUT_SECONDS); ask for a shorter range, fewer "
                    "group_by keys, or windows in UTC or the tenant's zone"
                ) from exc
        local = [b.astimezone(zone) for b in boundaries]
        with no_collection():  # no await inside: only this request's rows are being built
            blocks = _blocks(meters, cells, local, group_by)
        if order is not None or limit is not None:
            blocks = [_top(block, order, limit) for block in blocks]
        return MetersUsageOut(
            tenant_id=tenant_id,
            start=local[0],
            end=local[-1],
            window_size=None if size is None else size.value,
            timezone=zone.key,
            group_by=group_by,
            order_by=None if order is None else order.value,
            limit=limit,
            meters=blocks,
            truncated=any(block.truncated for block in blocks),
        )


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, errors=[FieldError(field=field, message=message)])


def period_range(period: Period, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[from, to) of `period` in `zone`, as UTC instants the rollups can answer exactly."""
    try:
        start, end = resolve(period, zone, datetime.now(UTC))
    except PeriodError as exc:
        raise InvalidInput(f"period: {exc.message}", errors=[exc.field_error()]) from exc
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    for instant in (start, end):
        if not EARLIEST <= instant <= LATEST:
            raise _invalid("period", f"'{period.text}' is too close to the limits of the calendar")
        if not is_on_quarter_hour(instant):
            # Only local mean times of the 19th century and before are off the grid.
            raise _invalid(
                "period",
                f"in {zone.key}, '{period.text}' has a boundary at "
                f"{instant.astimezone(zone).isoformat()}, which is not on a {BUCKET_MINUTES}-"
                "minute boundary in UTC: usage is kept in 15-minute buckets",
            )
    return start, end


def parse_usage_query(
    query: UsageQuery,
) -> tuple[
    datetime | None,
    datetime | None,
    Period | None,
    WindowSize | None,
    list[str],
    dict[str, list[str]],
]:
    """Everything that needs no database; all problems at once. Either `period` (resolved
    once the zone is known) or both instants come back."""
    has_from, has_to = query.start is not None, query.end is not None
    errors = range_choice_errors(query.period, has_from, has_to)
    errors += missing_range_errors(query.period, has_from, has_to)
    period: Period | None = None
    start = end = None
    if query.period is not None:
        try:
            period = parse_period(query.period)
        except PeriodError as exc:
            errors.append(exc.field_error())
    start = None if query.start is None else _instant(query.start, "from", errors)
    end = None if query.end is None else _instant(query.end, "to", errors)
    if start is not None and end is not None and start >= end:
        errors.append(FieldError(field="to", message="'to' must be after 'from'"))
    size: WindowSize | None = None
    if query.window_size:
        try:
            size = WindowSize(query.window_size)
        except ValueError:
            errors.append(
                FieldError(field="window_size", message="window_size is hour, day or month")
            )
    group_by: list[str] = []
    for part in _split(query.group_by):
        if part not in group_by:
            group_by.append(part)
    filters: dict[str, list[str]] = {}
    for item in query.filters:
        key, colon, value = item.partition(":")
        key = key.strip()
        if not colon or not key or not value:
            errors.append(
                FieldError(field="filter", message=f"'{item}' is not key:value (e.g. model:gpt-4o)")
            )
            continue
        filters.setdefault(key, [])
        if value not in filters[key]:
            filters[key].append(value)
    _check_top(query, errors)
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)
    assert period is not None or (start is not None and end is not None)
    return start, end, period, size, group_by, filters


def _check_top(query: UsageQuery, errors: list[FieldError]) -> None:
    """`order_by` is value or -value; `limit` is 1 to MAX_LIMIT."""
    if query.order_by:
        try:
            UsageOrder(query.order_by)
        except ValueError:
            errors.append(
                FieldError(
                    field="order_by",
                    message=f"order_by is value or -value (descending), got '{query.order_by}'",
                )
            )
    if query.limit is not None and not 1 <= query.limit <= MAX_LIMIT:
        errors.append(
            FieldError(field="limit", message=f"limit is 1 to {MAX_LIMIT}, got {query.limit}")
        )


def _split(values: Sequence[str]) -> list[str]:
    """group_by repeats, and a comma-separated list is accepted too."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _instant(raw: str, field: str, errors: list[FieldError]) -> datetime | None:
    # A '+' in an unencoded query string arrives as a space: '…T00:00:00 01:00'.
    text = raw.strip().replace(" ", "+")
    try:
        instant = msgspec.convert(text, datetime)
    except msgspec.ValidationError:
        errors.append(
            FieldError(field=field, message=f"'{raw}' is not an RFC 3339 date-time with offset")
        )
        return None
    if instant.tzinfo is None:
        errors.append(
            FieldError(field=field, message="must carry a UTC offset, e.g. 2026-11-01T00:00:00Z")
        )
        return None
    try:
        instant = instant.astimezone(UTC)
    except OverflowError:
        instant = EARLIEST - QUARTER_HOUR
    if not EARLIEST <= instant <= LATEST:
        # A day of margin: local times of any zone stay inside the calendar.
        errors.append(FieldError(field=field, message="must be between years 1 and 9999"))
        return None
    if not is_on_quarter_hour(instant):
        errors.append(
            FieldError(
                field=field,
                message=f"must fall on a {BUCKET_MINUTES}-minute boundary in UTC (usage is kept "
                f"in {BUCKET_MINUTES}-minute buckets), e.g. {_floor_hint(instant)}",
            )
        )
        return None
    return instant


def _floor_hint(instant: datetime) -> str:
    return floor_to_quarter_hour(instant).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_group_keys(
    meters: Sequence[MeterRecord], group_by: Sequence[str], filters: dict[str, list[str]]
) -> None:
    """group_by and filter keys: attribution fields, or a dimension the meter declares (for
    every meter: one that any meter declares)."""
    declared = {d for m in meters for d in m.dimensions}
    allowed = set(ATTRIBUTION_FIELDS) | declared
    hint = ", ".join([*ATTRIBUTION_FIELDS, *sorted(declared)])
    errors = [
        FieldError(field=field, message=f"unknown key '{key}'; one of: {hint}")
        for field, keys in (("group_by", group_by), ("filter", list(filters)))
        for key in keys
        if key not in allowed
    ]
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)


def _blocks(
    meters: Sequence[MeterRecord],
    cells: Sequence[asyncpg.Record],
    boundaries: Sequence[datetime],
    group_by: Sequence[str],
) -> list[MeterUsage]:
    """One block per meter, its rows in the order the store gives them (window, then group).
    The numbers arrive rendered (service.rollups.query.read_rendered) and records are read by
    position: a 100,000-row answer spends its time encoding, not formatting decimals."""
    by_meter: dict[int, list[UsageRow]] = defaultdict(list)
    aggregation = {meter.id: meter.aggregation for meter in meters}
    keys = list(enumerate(group_by, start=2))  # g0, g1, ... follow meter_id and window
    first = 2 + len(group_by)  # then sum, count, last, avg, max, distinct_count
    for cell in cells:
        meter_id, window = cell[0], cell[1]
        total, count, last, avg = cell[first], cell[first + 1], cell[first + 2], cell[first + 3]
        kind = aggregation[meter_id]
        if kind == "max":
            value = cell[first + 4]
        elif kind == "unique_count":
            value = str(cell[first + 5])
        else:
            value = total if kind == "sum" else last if kind == "last" else str(count)
        by_meter[meter_id].append(
            UsageRow(
                boundaries[window],
                boundaries[window + 1],
                {key: cell[position] for position, key in keys},
                value,
                total,
                count,
                last,
                avg,
            )
        )
    return [
        MeterUsage(
            meter=meter.event_name,
            aggregation=meter.aggregation,  # type: ignore[arg-type]
            unit=meter.unit,
            rows=by_meter.get(meter.id, []),
        )
        for meter in meters
    ]


def _top(block: MeterUsage, order: UsageOrder | None, limit: int | None) -> MeterUsage:
    """The block's rows by value (`order`; rows without a value last, ties in the usual order),
    then the first `limit` of them; `truncated` when rows were left out."""
    rows = block.rows
    if order is not None:
        descending = order is UsageOrder.VALUE_DESCENDING

        def by_value(row: UsageRow) -> tuple[bool, Decimal]:
            if row.value is None:
                return True, Decimal(0)
            value = Decimal(row.value)
            return False, -value if descending else value

        rows = sorted(rows, key=by_value)  # stable: ties keep the usual order
    truncated = limit is not None and len(rows) > limit
    if limit is not None:
        rows = rows[:limit]
    return msgspec.structs.replace(block, rows=rows, truncated=truncated)
