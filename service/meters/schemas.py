from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from service.common.schemas import CurrencyCode, Name, Slug

# Meters may declare at most this many dimensions of their own (each one widens the rollup key).
MAX_DIMENSIONS = 16

Aggregation = Literal["sum", "count", "last"]
MeterStatus = Literal["active", "archived"]
EventName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        max_length=64,
        description="lowercase letters, digits, '_', '.' and '-'; at most 64 characters",
    ),
]
DimensionKey = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z_][a-z0-9_]{0,63}$",
        max_length=64,
        description="an identifier: lowercase letters, digits and '_', not starting with a digit",
    ),
]
Dimensions = Annotated[
    list[DimensionKey],
    msgspec.Meta(
        max_length=MAX_DIMENSIONS,
        description="keys events may carry in `dimensions` and queries may group by",
    ),
]
Description = Annotated[str, msgspec.Meta(max_length=2000)]
Unit = Annotated[str, msgspec.Meta(min_length=1, max_length=32, examples=["tokens"])]
Metadata = Annotated[dict[str, Any], msgspec.Meta(description="free JSON object, stored as is")]
ExactDecimal = Annotated[
    Decimal,
    msgspec.Meta(description='exact decimal as a string ("2.50") or a number; at most 12 places'),
]
MatchValue = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Match = Annotated[
    dict[str, MatchValue],
    msgspec.Meta(
        max_length=32,
        description="only usage whose attribution fields (org_id, project_id, api_key_id, "
        "user_id, model) or declared dimensions have these values",
        examples=[{"model": "gpt-4o"}],
    ),
]


class MeterCreate(msgspec.Struct, forbid_unknown_fields=True):
    event_name: EventName
    name: Name
    aggregation: Aggregation
    currency: CurrencyCode
    description: Description | None = None
    unit: Unit | None = None
    dimensions: Dimensions = msgspec.field(default_factory=list)
    metadata: Metadata = msgspec.field(default_factory=dict)


class MeterUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Unset fields keep their value. `dimensions` may only add keys; `aggregation` and
    `currency` may only change while the meter has no events."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    unit: Unit | msgspec.UnsetType | None = msgspec.UNSET
    aggregation: Aggregation | msgspec.UnsetType = msgspec.UNSET
    currency: CurrencyCode | msgspec.UnsetType = msgspec.UNSET
    dimensions: Dimensions | msgspec.UnsetType = msgspec.UNSET
    metadata: Metadata | msgspec.UnsetType = msgspec.UNSET
    status: MeterStatus | msgspec.UnsetType = msgspec.UNSET


class MeterOut(msgspec.Struct):
    event_name: str
    name: str
    description: str | None
    unit: str | None
    aggregation: str
    dimensions: list[str]
    currency: str
    metadata: dict[str, Any]
    status: str
    has_events: bool
    created_at: datetime
    updated_at: datetime


class TierIn(msgspec.Struct, forbid_unknown_fields=True):
    """One step of a graduated price: units above the previous tier's `up_to`, up to and
    including this one's, cost `unit_amount` per `per_units`; the last tier has `up_to` null."""

    unit_amount: ExactDecimal
    up_to: ExactDecimal | None = None


class PriceCreate(msgspec.Struct, forbid_unknown_fields=True):
    meter: EventName
    # Required unless `tiers` are given (then each tier carries its own unit amount).
    unit_amount: ExactDecimal | None = None
    # A factory, not a plain default: a Decimal default would not serialize into OpenAPI.
    per_units: ExactDecimal = msgspec.field(default_factory=lambda: Decimal(1))
    match: Match = msgspec.field(default_factory=dict)
    tenant_id: Slug | None = None
    tiers: Annotated[list[TierIn], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    # On a 15-minute UTC boundary; default: now, rounded up to the next boundary.
    effective_from: datetime | None = None
    effective_to: datetime | None = None


class PriceEnd(msgspec.Struct, forbid_unknown_fields=True):
    effective_to: datetime


class TierOut(msgspec.Struct):
    up_to: str | None
    unit_amount: str


class PriceOut(msgspec.Struct):
    id: uuid.UUID
    meter: str
    currency: str
    unit_amount: str
    per_units: str
    match: dict[str, str]
    tenant_id: str | None
    tiers: list[TierOut]
    effective_from: datetime
    effective_to: datetime | None
    created_at: datetime
