"""Canceling an accepted event (a correction): in one transaction the event is marked
canceled and leaves every aggregate (the rollups, through service.rollups.withdraw, and the
budgets' running totals). It stays in the raw log with its idempotency key taken, so a re-sent
copy is still a duplicate. Invoices need nothing of their own: a period already finalized is
re-rated from the rollups by the next finalization, as for late usage, and the difference
becomes a negative prior-period adjustment line.

An event can be canceled while it could still be accepted: within the late-arrival window of
its timestamp. That is what keeps both the raw events of its 15-minute bucket (retention never
deletes inside the window; the bucket is recomputed from them) and its period open to
adjustments (a period is settled only once its late-arrival window has closed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.budgets.ingest import withdraw_event_usage
from service.common.auth import Principal
from service.common.errors import Conflict, FieldError, InvalidInput, NotFound
from service.db.connections import driver_transaction
from service.events import repository
from service.events.schemas import CancelOut
from service.rollups.withdraw import withdraw_event

log = structlog.get_logger(__name__)

# Event ids are PostgreSQL bigints.
_MAX_ID = 2**63 - 1


class CancelWindowClosed(Conflict):
    code, title = "cancel_window_closed", "Event too old to cancel"


def parse_event_id(text: str) -> int | None:
    """The id as the API shows it (a decimal string), None when it cannot be an event's."""
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value <= _MAX_ID else None


async def cancel_event(
    engine: AsyncEngine,
    principal: Principal,
    event_id_text: str,
    tenant_id: str | None,
    late_arrival: timedelta,
) -> CancelOut:
    tenant_id = tenant_id or principal.tenant_id
    if tenant_id is None:
        raise InvalidInput(
            "tenant_id is required for a key bound to no tenant",
            errors=[FieldError(field="tenant_id", message="required")],
        )
    principal.ensure_tenant(tenant_id)
    event_id = parse_event_id(event_id_text)
    missing = NotFound(f"tenant '{tenant_id}' has no event {event_id_text!r}")
    if event_id is None:
        raise missing
    async with driver_transaction(engine) as connection:
        event = await repository.lock_event(connection, tenant_id, event_id)
        if event is None:
            raise missing
        if event.canceled_at is not None:  # canceling twice answers the same
            return CancelOut(id=str(event_id), status="canceled", canceled_at=event.canceled_at)
        oldest = datetime.now(UTC) - late_arrival
        if event.ts < oldest:
            raise CancelWindowClosed(
                f"event {event_id} happened at {event.ts:%Y-%m-%d %H:%M} UTC, before the "
                f"late-arrival window ({late_arrival.days} days): its period can no longer be "
                "adjusted, so it can no longer be canceled"
            )
        canceled_at = await repository.mark_canceled(connection, tenant_id, event_id)
        withdrawal = await withdraw_event(connection, tenant_id, event_id, event.ts)
        await withdraw_event_usage(connection, tenant_id, event_id)
    log.info(
        "events.canceled",
        tenant_id=tenant_id,
        event_id=event_id,
        rows_updated=withdrawal.rows_updated,
        rows_deleted=withdrawal.rows_deleted,
        cube=withdrawal.cube,
    )
    return CancelOut(id=str(event_id), status="canceled", canceled_at=canceled_at)
