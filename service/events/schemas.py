from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
AttributionId = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
# A dimension value is a string, an integer or a boolean; it is stored as a canonical string
# (`"true"`, `"false"`, `"42"`), so `true` and `"true"` are the same value.
DimensionValue = Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | int | bool
EventName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
TenantId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
MAX_VALUES = 32


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    """One usage event: `event_name` + `value`, or `values` (several meters' quantities from
    one occurrence, such as one LLM call's input, output and cache tokens: one event, one
    idempotency key). A value is a decimal given as a string or a number (optional, or null
    in `values`, for `count` meters); `timestamp` is RFC 3339 with an offset."""

    idempotency_key: IdempotencyKey
    timestamp: datetime
    event_name: EventName | None = None
    value: Decimal | None = None
    values: (
        Annotated[
            dict[EventName, Decimal | None], msgspec.Meta(min_length=1, max_length=MAX_VALUES)
        ]
        | None
    ) = None
    tenant_id: TenantId | None = None
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
    """A stored event: `event_name` and `value` for a single quantity, else `values` (meter
    event_name to quantity, null where a count meter took none)."""

    id: str
    tenant_id: str
    event_name: str | None
    idempotency_key: str
    timestamp: datetime
    received_at: datetime
    value: str | None
    values: dict[str, str | None] | None
    org_id: str | None
    project_id: str | None
    api_key_id: str | None
    user_id: str | None
    model: str | None
    dimensions: dict[str, str]
    metadata: dict[str, Any] | None
    # `canceled` once POST /v1/events/{id}/cancel took it out of every aggregate (then
    # `canceled_at` says when); its idempotency key stays taken.
    status: Literal["accepted", "canceled"] = "accepted"
    canceled_at: datetime | None = None


class CancelOut(msgspec.Struct):
    """A canceled event: it counts in no usage, cost, budget or invoice from `canceled_at` on
    (a finalized period gets a negative adjustment on the next invoice)."""

    id: str
    status: Literal["canceled"]
    canceled_at: datetime


class EventPage(msgspec.Struct):
    """One page of raw events, newest first; pass next_cursor back as ?cursor= for the next.
    `from` and `to` echo the range asked for (`period` resolved), with the offset of
    `timezone`; null when that end is open."""

    items: list[EventOut]
    next_cursor: str | None = None
    start: datetime | None = msgspec.field(default=None, name="from")
    end: datetime | None = msgspec.field(default=None, name="to")
    timezone: str = "UTC"
