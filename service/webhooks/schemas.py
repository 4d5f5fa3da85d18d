from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from service.common.schemas import Slug

EventType = Literal["budget.threshold_reached", "invoice.finalized", "invoice.voided"]
EVENT_TYPES: tuple[str, ...] = ("budget.threshold_reached", "invoice.finalized", "invoice.voided")
DeliveryStatus = Literal["pending", "delivered", "failed"]


class EndpointCreate(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    event_types: Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=3)]
    description: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    # Only this tenant's events; every tenant's when absent.
    tenant_id: Slug | None = None


class EndpointOut(msgspec.Struct):
    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None
    tenant_id: str | None
    created_at: datetime


class EndpointCreated(msgspec.Struct):
    """The only answer that ever carries the signing secret."""

    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None
    tenant_id: str | None
    created_at: datetime
    secret: str


class AttemptOut(msgspec.Struct):
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None


class DeliveryOut(msgspec.Struct):
    """A message to one endpoint; `id` is the webhook-id header of every attempt."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    tenant_id: str
    type: str
    status: DeliveryStatus
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    attempts: list[AttemptOut]
