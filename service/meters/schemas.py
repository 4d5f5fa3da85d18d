from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from service.common.schemas import CurrencyCode, Name, Slug

# Meters may declare at most this many dimensions of their own (each one widens the rollup key).
MAX_DIMENSIONS = 16

Aggregation = Literal["sum", "count", "last", "max", "unique_count"]
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
UniqueKey = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z_][a-z0-9_]{0,63}$",
        max_length=64,
        description="unique_count meters: the attribution field (org_id, project_id, "
        "api_key_id, user_id, model) or declared dimension whose distinct values are counted",
        examples=["user_id"],
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


OtelMetricName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z][A-Za-z0-9_./-]{0,254}$",
        max_length=255,
        description="an OpenTelemetry instrument name: a letter, then letters, digits, "
        "'_', '.', '/' and '-'; at most 255 characters",
        examples=["gen_ai.client.token.usage"],
    ),
]
OtelAttributeKey = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
OtelAttributeValue = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]


class OtelMapping(msgspec.Struct, forbid_unknown_fields=True):
    """Data points of OpenTelemetry metric `metric` exported to POST /otlp/v1/metrics become
    this meter's usage; with `attributes`, only points carrying all of them (values compared
    as text: `true`, `42`)."""

    metric: OtelMetricName
    attributes: Annotated[
        dict[OtelAttributeKey, OtelAttributeValue],
        msgspec.Meta(max_length=16, examples=[{"gen_ai.token.type": "input"}]),
    ] = msgspec.field(default_factory=dict)


class MeterCreate(msgspec.Struct, forbid_unknown_fields=True):
    event_name: EventName
    name: Name
    aggregation: Aggregation
    # Required when the meter is billable: the currency of all its prices.
    currency: CurrencyCode | None = None
    # False: metered and queryable, never on an invoice (latency, say).
    billable: bool = True
    description: Description | None = None
    unit: Unit | None = None
    dimensions: Dimensions = msgspec.field(default_factory=list)
    metadata: Metadata = msgspec.field(default_factory=dict)
    otel: OtelMapping | None = None
    # unique_count only, and required there: whose distinct values are counted.
    unique_key: UniqueKey | None = None
    # sum only: accept negative values (refunds, credits).
    allow_negative: bool = False


class MeterUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Unset fields keep their value. `dimensions` may only add keys; `aggregation` and
    `currency` may only change while the meter has no events."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    unit: Unit | msgspec.UnsetType | None = msgspec.UNSET
    aggregation: Aggregation | msgspec.UnsetType = msgspec.UNSET
    currency: CurrencyCode | msgspec.UnsetType | None = msgspec.UNSET
    billable: bool | msgspec.UnsetType = msgspec.UNSET
    dimensions: Dimensions | msgspec.UnsetType = msgspec.UNSET
    metadata: Metadata | msgspec.UnsetType = msgspec.UNSET
    status: MeterStatus | msgspec.UnsetType = msgspec.UNSET
    # null removes the mapping.
    otel: OtelMapping | msgspec.UnsetType | None = msgspec.UNSET
    unique_key: UniqueKey | msgspec.UnsetType | None = msgspec.UNSET
    allow_negative: bool | msgspec.UnsetType = msgspec.UNSET


class MeterOut(msgspec.Struct):
    event_name: str
    name: str
    description: str | None
    unit: str | None
    aggregation: str
    dimensions: list[str]
    currency: str | None
    billable: bool
    metadata: dict[str, Any]
    status: str
    has_events: bool
    created_at: datetime
    updated_at: datetime
    otel: OtelMapping | None = None
    unique_key: str | None = None
    allow_negative: bool = False


TierMode = Literal["graduated", "volume"]


class TierIn(msgspec.Struct, forbid_unknown_fields=True):
    """One tier: units above the previous tier's `up_to`, up to and including this one's, cost
    `unit_amount` per `per_units`; the last tier has `up_to` null. `flat_amount` is charged
    once when a period's usage enters the tier (never divided by `per_units`)."""

    unit_amount: ExactDecimal
    up_to: ExactDecimal | None = None
    flat_amount: ExactDecimal | None = None


class RelativeToIn(msgspec.Struct, forbid_unknown_fields=True):
    """Per unit, `factor` times the per-unit rate (unit_amount / per_units) of the price that
    applies to the same usage on meter `meter` (same tenant, attribute values and instant)."""

    meter: EventName
    factor: ExactDecimal


class PriceCreate(msgspec.Struct, forbid_unknown_fields=True):
    meter: EventName
    # Required unless `tiers` or `relative_to` are given.
    unit_amount: ExactDecimal | None = None
    # Default 1; for a relative price, default: the referenced price's (it only sets how the
    # unit amount shows on invoice lines).
    per_units: ExactDecimal | None = None
    relative_to: RelativeToIn | None = None
    match: Match = msgspec.field(default_factory=dict)
    tenant_id: Slug | None = None
    tiers: Annotated[list[TierIn], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    # With tiers: `graduated` (default: each unit at its tier's rate) or `volume` (every unit
    # at the rate of the tier the period's quantity reaches).
    tier_mode: TierMode | None = None
    # Units per period that cost nothing, deducted before tiers or packages.
    free_units: ExactDecimal | None = None
    # Bill the quantity (after free units) in whole packages of this many units, unit_amount
    # per package; per_units must then be absent or 1, and there are no tiers.
    package_size: ExactDecimal | None = None
    # Per period: a lower amount is topped up by a separate `minimum` invoice line.
    minimum_amount: ExactDecimal | None = None
    # On a 15-minute UTC boundary; default: now, rounded up to the next boundary.
    effective_from: datetime | None = None
    effective_to: datetime | None = None


class PriceEnd(msgspec.Struct, forbid_unknown_fields=True):
    effective_to: datetime


class TierOut(msgspec.Struct):
    up_to: str | None
    unit_amount: str
    flat_amount: str


class RelativeToOut(msgspec.Struct):
    meter: str
    factor: str


class PriceOut(msgspec.Struct):
    id: uuid.UUID
    meter: str
    currency: str
    # Both null for a relative price without per_units of its own: its amount is resolved at
    # rating time and shown per the referenced price's per_units.
    unit_amount: str | None
    per_units: str | None
    relative_to: RelativeToOut | None
    match: dict[str, str]
    tenant_id: str | None
    tiers: list[TierOut]
    tier_mode: str
    free_units: str
    package_size: str | None
    minimum_amount: str | None
    effective_from: datetime
    effective_to: datetime | None
    created_at: datetime


class LlmPresetIn(msgspec.Struct, forbid_unknown_fields=True):
    # Of the meters the preset creates that take prices; existing meters keep theirs.
    currency: CurrencyCode | None = None


class LlmPresetOut(msgspec.Struct):
    meters: list[MeterOut]


class LlmPriceImport(msgspec.Struct, forbid_unknown_fields=True):
    # Matched on `model` exactly as named here.
    models: Annotated[list[MatchValue], msgspec.Meta(min_length=1, max_length=100)]
    # A catalog provider id (openai, anthropic, google, ...): only its models are looked up.
    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    # Set: the prices are this tenant's overrides; else list prices.
    tenant_id: Slug | None = None
    # On a 15-minute UTC boundary; default: now, rounded up to the next boundary.
    effective_from: datetime | None = None


class ImportConflict(msgspec.Struct):
    model: str
    meter: str
    price_id: uuid.UUID  # the existing price the new one would overlap


class LlmPriceImportOut(msgspec.Struct):
    created: list[PriceOut]
    not_found: list[str]
    conflicts: list[ImportConflict]
