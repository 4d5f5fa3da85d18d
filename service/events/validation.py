"""Turn one decoded event into a row to store, or a clear error naming the field."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec

from service.common.text import find_unstorable_text
from service.events.reference import MeterView, TenantView
from service.events.repository import EventRow
from service.events.schemas import EventIn

MAX_INTEGER_DIGITS = 28
MAX_DECIMAL_PLACES = 18
MAX_METADATA_BYTES = 8192
_PATH = re.compile(r"at `\$(?:\.(\w+))?")


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str
    message: str
    field: str | None = None
    status: int = 422


@dataclass(frozen=True, slots=True)
class Limits:
    now: datetime
    late_arrival: timedelta
    future_tolerance: timedelta


def decode_error(exc: msgspec.ValidationError | msgspec.DecodeError | RecursionError) -> Rejection:
    """msgspec says 'Expected `str`, got `int` - at `$.model`': keep the message, name the field."""
    if isinstance(exc, RecursionError):
        return Rejection("invalid_event", "the event is nested too deeply")
    text = str(exc)
    match = _PATH.search(text)
    field = match.group(1) if match and match.group(1) else None
    if "Object contains unknown field" in text:
        unknown = text.split("`")[1] if "`" in text else None
        return Rejection("unknown_field", f"unknown field '{unknown}'", unknown)
    if "missing required field" in text:
        missing = text.split("`")[1] if "`" in text else None
        return Rejection("missing_field", f"'{missing}' is required", missing)
    return Rejection("invalid_field", text, field)


def canonical_hash(event: EventIn, tenant_id: str, ts: datetime) -> bytes:
    """SHA-256 of the event's meaning: equal payloads hash equal whatever their JSON spelling
    (key order, 1.50 vs 1.5, offsets of the same instant)."""
    value = None if event.value is None else format(event.value.normalize(), "f")
    canonical = [
        tenant_id,
        event.event_name,
        value,
        ts.astimezone(UTC).isoformat(),
        event.org_id,
        event.project_id,
        event.api_key_id,
        event.user_id,
        event.model,
        sorted((event.dimensions or {}).items()),
        event.metadata,
    ]
    return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).digest()


def text_rejection(event: EventIn) -> Rejection | None:
    """An event holding a string PostgreSQL cannot store (a NUL character, a lone surrogate),
    named by its field. Checked before anything of the event reaches the database, the tenant
    look-up included."""
    fields = {
        "event_name": event.event_name,
        "idempotency_key": event.idempotency_key,
        "tenant_id": event.tenant_id,
        "org_id": event.org_id,
        "project_id": event.project_id,
        "api_key_id": event.api_key_id,
        "user_id": event.user_id,
        "model": event.model,
        "dimensions": event.dimensions,
        "metadata": event.metadata,
    }
    found = find_unstorable_text(fields)
    if found is None:
        return None
    field, reason = found
    return Rejection("invalid_text", f"{field} {reason}", field)


def validate_event(
    event: EventIn,
    *,
    tenant_id: str,
    tenant: TenantView | None,
    meters: Mapping[str, MeterView],
    limits: Limits,
) -> EventRow | Rejection:
    if tenant is None:
        return Rejection("unknown_tenant", f"tenant '{tenant_id}' does not exist", "tenant_id")
    if tenant.status != "active":
        return Rejection(
            "tenant_suspended",
            f"tenant '{tenant_id}' is suspended; events are refused",
            "tenant_id",
        )
    meter = meters.get(event.event_name)
    if meter is None:
        return Rejection(
            "unknown_meter", f"no meter has event_name '{event.event_name}'", "event_name"
        )
    if meter.status != "active":
        return Rejection(
            "meter_archived",
            f"meter '{event.event_name}' is archived and takes no new events",
            "event_name",
        )
    value = event.value
    if value is None:
        if meter.aggregation != "count":
            return Rejection(
                "missing_value", f"a '{meter.aggregation}' meter needs a value", "value"
            )
    else:
        if not value.is_finite():
            return Rejection("invalid_value", "value must be a finite number", "value")
        if value < 0:
            return Rejection("invalid_value", "value must not be negative", "value")
        if value.adjusted() >= MAX_INTEGER_DIGITS:
            return Rejection(
                "invalid_value", f"value must be below 1e{MAX_INTEGER_DIGITS}", "value"
            )
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
            return Rejection(
                "invalid_value", f"value has more than {MAX_DECIMAL_PLACES} decimal places", "value"
            )
        if value == 0:
            value = Decimal(0)
    ts = event.timestamp
    if ts.tzinfo is None or ts.utcoffset() is None:
        return Rejection(
            "invalid_timestamp",
            "timestamp must be RFC 3339 with an offset, e.g. 2026-10-01T12:00:00Z",
            "timestamp",
        )
    ts = ts.astimezone(UTC)
    if ts > limits.now + limits.future_tolerance:
        ahead = int(limits.future_tolerance.total_seconds())
        return Rejection(
            "timestamp_in_future",
            f"timestamp is more than {ahead} s in the future",
            "timestamp",
        )
    if ts < limits.now - limits.late_arrival:
        return Rejection(
            "timestamp_too_old",
            f"timestamp is older than the late-arrival window ({limits.late_arrival.days} days)",
            "timestamp",
        )
    dimensions = event.dimensions or {}
    undeclared = sorted(set(dimensions) - meter.dimensions)
    if undeclared:
        declared = ", ".join(sorted(meter.dimensions)) or "none"
        return Rejection(
            "undeclared_dimension",
            f"dimension '{undeclared[0]}' is not declared by meter '{meter.event_name}' "
            f"(declared: {declared})",
            f"dimensions.{undeclared[0]}",
        )
    metadata_json = None
    if event.metadata is not None:
        encoded = msgspec.json.encode(event.metadata)
        if len(encoded) > MAX_METADATA_BYTES:
            return Rejection(
                "metadata_too_large", f"metadata is over {MAX_METADATA_BYTES} bytes", "metadata"
            )
        metadata_json = encoded.decode()
    return EventRow(
        tenant_id=tenant_id,
        meter_id=meter.id,
        idempotency_key=event.idempotency_key,
        payload_hash=canonical_hash(event, tenant_id, ts),
        value=value,
        ts=ts,
        org_id=event.org_id,
        project_id=event.project_id,
        api_key_id=event.api_key_id,
        user_id=event.user_id,
        model=event.model,
        dimensions_json=msgspec.json.encode(dimensions, order="sorted").decode(),
        metadata_json=metadata_json,
    )
