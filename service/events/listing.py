"""GET /v1/events: recent raw events of one tenant, keyset-paginated, for audit and debugging."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from service.common.auth import Principal
from service.common.errors import FieldError, InvalidInput, NotFound
from service.common.money import to_plain_string
from service.common.periods import PeriodError, parse_period, range_choice_errors, resolve
from service.common.schemas import decode_cursor, encode_cursor
from service.common.timezones import zone_named
from service.db.connections import driver_transaction
from service.events import repository
from service.events.schemas import EventOut, EventPage


@dataclass(frozen=True, slots=True)
class EventRange:
    """The time range of a listing as the caller gave it: instants (either end open), or a
    period resolved in `timezone` (default: the tenant's)."""

    start: datetime | None = None
    end: datetime | None = None
    period: str | None = None
    timezone: str | None = None


async def list_events(
    engine: AsyncEngine,
    principal: Principal,
    tenant_id: str | None,
    event_name: str | None,
    when: EventRange,
    cursor: str | None,
    limit: int,
    idempotency_key: str | None = None,
) -> EventPage:
    tenant_id = tenant_id or principal.tenant_id
    if tenant_id is None:
        raise InvalidInput(
            "tenant_id is required", errors=[FieldError(field="tenant_id", message="required")]
        )
    principal.ensure_tenant(tenant_id)
    start, end = when.start, when.end
    errors = range_choice_errors(when.period, start is not None, end is not None)
    for name, instant in (("from", start), ("to", end)):
        if instant is not None and instant.tzinfo is None:
            errors.append(FieldError(field=name, message="must carry a UTC offset (RFC 3339)"))
    period = None
    if when.period is not None:
        try:
            period = parse_period(when.period)
        except PeriodError as exc:
            errors.append(exc.field_error())
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)
    asked_zone = None if when.timezone is None else zone_named(when.timezone)
    before_id = None
    if cursor:
        value = decode_cursor(cursor, 1)[0]
        if not isinstance(value, int):
            raise InvalidInput("cursor is not one this API returned")
        before_id = value
    async with driver_transaction(engine) as connection:
        tenant_zone = await repository.tenant_timezone(connection, tenant_id)
        if tenant_zone is None:
            raise NotFound(f"tenant '{tenant_id}' does not exist")
        zone = asked_zone or zone_named(tenant_zone)
        if period is not None:
            try:
                start, end = resolve(period, zone, datetime.now(UTC))
            except PeriodError as exc:
                raise InvalidInput(f"period: {exc.message}", errors=[exc.field_error()]) from exc
        meter_id = None
        if event_name is not None:
            meter_id = await connection.fetchval(
                "SELECT id FROM meters WHERE event_name = $1", event_name
            )
            if meter_id is None:
                raise InvalidInput(
                    f"no meter has event_name '{event_name}'",
                    errors=[FieldError(field="event_name", message="unknown meter")],
                )
        rows = await repository.list_events(
            connection, tenant_id, meter_id, start, end, before_id, limit + 1, idempotency_key
        )
    items = [
        EventOut(
            id=str(row["id"]),
            tenant_id=row["tenant_id"],
            event_name=row["event_name"],
            idempotency_key=row["idempotency_key"],
            timestamp=row["ts"],
            received_at=row["received_at"],
            value=None if row["value"] is None else to_plain_string(row["value"]),
            values=_values(row["value_names"], row["quantities"]),
            org_id=row["org_id"],
            project_id=row["project_id"],
            api_key_id=row["api_key_id"],
            user_id=row["user_id"],
            model=row["model"],
            dimensions=_json(row["dimensions"]),
            metadata=_json(row["metadata"]),
            status="accepted" if row["canceled_at"] is None else "canceled",
            canceled_at=row["canceled_at"],
        )
        for row in rows[:limit]
    ]
    next_cursor = encode_cursor([rows[limit - 1]["id"]]) if len(rows) > limit else None
    return EventPage(
        items=items,
        next_cursor=next_cursor,
        start=None if start is None else start.astimezone(zone),
        end=None if end is None else end.astimezone(zone),
        timezone=zone.key,
    )


def _values(names: list[str] | None, quantities: list[Any] | None) -> dict[str, str | None] | None:
    if names is None or quantities is None:
        return None
    return {
        name: None if quantity is None else to_plain_string(quantity)
        for name, quantity in zip(names, quantities, strict=True)
    }


def _json(value: Any) -> Any:
    """jsonb arrives decoded on the service's pool (SQLAlchemy sets a codec), text elsewhere."""
    if isinstance(value, (str, bytes)):
        return msgspec.json.decode(value)
    return value
