from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
AttributionId = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
DimensionValue = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
EventName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
TenantId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    """One usage event. `value` is a decimal given as a string or a number (optional for
    `count` meters); `timestamp` is RFC 3339 with an offset."""

    event_name: EventName
    idempotency_key: IdempotencyKey
    timestamp: datetime
    tenant_id: TenantId | None = None
    value: Decimal | None = None
    org_id: AttributionId | None = None
    project_id: AttributionId | None = None
    api_key_id: AttributionId | None = None
    user_id: AttributionId | None = None
    model: AttributionId | None = None
    dimensions: dict[str, DimensionValue] | None = None
    metadata: dict[str, Any] | None = None


class BatchIn(msgspec.Struct):
    """Up to the batch limit (default 1000) events; each is validated on its own."""

    events: list[EventIn]


EventStatus = Literal["accepted", "duplicate", "conflict", "invalid"]


class EventError(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    field: str | None = None


class EventAck(msgspec.Struct):
    id: str
    status: Literal["accepted", "duplicate"]


class BatchResult(msgspec.Struct, omit_defaults=True):
    index: int
    status: EventStatus
    id: str | None = None
    error: EventError | None = None


class BatchOut(msgspec.Struct):
    accepted: int
    duplicates: int
    rejected: int
    results: list[BatchResult]


class EventOut(msgspec.Struct):
    id: str
    tenant_id: str
    event_name: str
    idempotency_key: str
    timestamp: datetime
    received_at: datetime
    value: str | None
    org_id: str | None
    project_id: str | None
    api_key_id: str | None
    user_id: str | None
    model: str | None
    dimensions: dict[str, str]
    metadata: dict[str, Any] | None


class EventPage(msgspec.Struct):
    """One page of raw events, newest first; pass next_cursor back as ?cursor= for the next.
    `from` and `to` echo the range asked for (`period` resolved), with the offset of
    `timezone`; null when that end is open."""

    items: list[EventOut]
    next_cursor: str | None = None
    start: datetime | None = msgspec.field(default=None, name="from")
    end: datetime | None = msgspec.field(default=None, name="to")
    timezone: str = "UTC"
