from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from litestar import Controller, Request, get, post
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncEngine

from service.common.auth import Scope, current_principal, requires
from service.common.errors import FieldError, InvalidInput
from service.common.openapi_contract import PROBLEM_STATUSES
from service.common.periods import PERIOD_DOC
from service.common.schemas import DEFAULT_LIMIT, Limit
from service.events.cancel import cancel_event
from service.events.listing import EventRange, list_events
from service.events.schemas import BatchOut, CancelOut, EventAck, EventIn, EventPage
from service.events.service import Ingestor
from service.settings import Settings


@dataclass
class BatchOperation(Operation):
    """Documents the batch body, which the handler reads raw."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        required=["events"],
                        properties={
                            "events": Schema(
                                type=OpenAPIType.ARRAY,
                                max_items=1000,
                                items=Reference(ref="#/components/schemas/EventIn"),
                            )
                        },
                    )
                )
            },
        )


class EventController(Controller):
    path = "/v1/events"
    tags = ["events"]

    @post(
        "/",
        summary="Ingest one event",
        status_code=202,
        guards=[requires(Scope.INGEST)],
        description="Answered once the event is committed (group commit coalesces concurrent "
        "requests). 202 with status accepted or duplicate; 409 when the idempotency key was "
        "used with another payload; 422 when invalid.",
    )
    async def ingest_event(self, data: EventIn, request: Request[Any, Any, Any]) -> EventAck:
        ingestor: Ingestor = request.app.state.ingestor
        return await ingestor.ingest_one(data, current_principal(request))

    @post(
        "/batch",
        summary="Ingest a batch of events",
        status_code=200,
        guards=[requires(Scope.INGEST)],
        operation_class=BatchOperation,
        description="Each event is validated on its own: valid events are stored even when "
        "others are rejected. The answer counts accepted, duplicates and rejected events and "
        "gives a result per event, by index.",
    )
    async def ingest_batch(self, request: Request[Any, Any, Any]) -> BatchOut:
        # The body is decoded by the service event by event, so that one bad event does not
        # sink the batch; BatchOperation documents it in the OpenAPI contract.
        ingestor: Ingestor = request.app.state.ingestor
        principal = current_principal(request)
        return await ingestor.ingest_batch(await request.body(), principal)

    @get(
        "/",
        summary="List raw events (newest first)",
        guards=[requires(Scope.READ)],
        opt={PROBLEM_STATUSES: ["404"]},  # unknown tenant
        description="Events of one tenant whose timestamp is in [from, to) (either end may be "
        "open), or in `period` resolved in `timezone` (default: the tenant's); `period` with "
        "`from` or `to` is a 422. The answer echoes the range with the offset of `timezone`. "
        "Each page resolves `period` anew: to page through a rolling `7d` without it moving, "
        "pass the echoed `from` and `to` instead.",
    )
    async def list_raw_events(
        self,
        request: Request[Any, Any, Any],
        db_engine: AsyncEngine,
        tenant_id: str | None = Parameter(default=None, query="tenant_id"),
        event_name: str | None = Parameter(default=None, query="event_name"),
        start: datetime | None = Parameter(default=None, query="from"),
        end: datetime | None = Parameter(default=None, query="to"),
        period: str | None = Parameter(default=None, query="period", description=PERIOD_DOC),
        timezone: str | None = Parameter(
            default=None,
            query="timezone",
            description="IANA zone of `period` and of the echoed range; default the tenant's",
        ),
        idempotency_key: str | None = Parameter(
            default=None,
            query="idempotency_key",
            min_length=1,
            max_length=255,
            description="Only the event stored under this idempotency key (exact match), "
            "canceled or not",
        ),
        cursor: str | None = None,
        limit: Limit = DEFAULT_LIMIT,
    ) -> EventPage:
        _require_rfc3339(request, "from", "to")
        return await list_events(
            db_engine,
            current_principal(request),
            tenant_id,
            event_name,
            EventRange(start=start, end=end, period=period, timezone=timezone),
            cursor,
            limit,
            idempotency_key,
        )

    @post(
        "/{event_id:str}/cancel",
        summary="Cancel an accepted event",
        status_code=200,
        guards=[requires(Scope.INGEST)],
        opt={PROBLEM_STATUSES: ["404", "409"]},
        description="A correction: in one transaction the event leaves every aggregate (usage, "
        "costs, budgets, invoice drafts) and is marked canceled in the raw log (`GET "
        "/v1/events` shows `status: canceled` and `canceled_at`). Idempotent: canceling again "
        "answers the same. Its idempotency key stays taken: re-sending the event is a "
        "duplicate. An event of a period already finalized is credited on the next "
        "finalized invoice as a negative prior-period adjustment line. Events older than the "
        "late-arrival window can no longer be canceled (409 cancel_window_closed). A key "
        "bound to no tenant names the tenant with `tenant_id`.",
    )
    async def cancel_event(
        self,
        request: Request[Any, Any, Any],
        db_engine: AsyncEngine,
        settings: Settings,
        event_id: str,
        tenant_id: str | None = Parameter(default=None, query="tenant_id"),
    ) -> CancelOut:
        return await cancel_event(
            db_engine,
            current_principal(request),
            event_id,
            tenant_id,
            timedelta(days=settings.late_arrival_days),
        )


# Litestar converts query values leniently: a bare number becomes a Unix timestamp, so
# `to=2020` would silently mean 1970-01-01T00:33:40Z. Times in queries are RFC 3339 only.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _require_rfc3339(request: Request[Any, Any, Any], *names: str) -> None:
    bad = [n for n in names if (v := request.query_params.get(n)) and not _RFC3339.match(v)]
    if bad:
        raise InvalidInput(
            f"{', '.join(bad)} must be an RFC 3339 time, e.g. '2026-11-01T00:00:00Z'",
            errors=[FieldError(field=n, message="expected an RFC 3339 time") for n in bad],
        )
