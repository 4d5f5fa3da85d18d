"""Turn one decoded event into a row to store, or a clear error naming the field."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from service.common.request_body import entry_field, field_of
from service.common.text import find_unstorable_text
from service.events.reference import MeterView, TenantView
from service.events.repository import EventRow
from service.events.schemas import EventIn

MAX_INTEGER_DIGITS = 28
MAX_DECIMAL_PLACES = 18
MAX_METADATA_BYTES = 8192
_PATH = re.compile(r"at `\$(?:\.(\w+))?")
_EVENT_DECODER = msgspec.json.Decoder(EventIn)


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


def decode_error(
    exc: msgspec.ValidationError | msgspec.DecodeError | RecursionError,
    raw: bytes | None = None,
) -> Rejection:
    """msgspec says 'Expected `str`, got `int` - at `$.model`': keep the message, name the field
    (for a bad dimension or values entry, with its key when `raw`, the event's JSON, is given)."""
    if isinstance(exc, RecursionError):
        return Rejection("invalid_event", "the event is nested too deeply")
    text = str(exc)
    match = _PATH.search(text)
    field = match.group(1) if match and match.group(1) else None
    if field is not None and raw is not None and isinstance(exc, msgspec.ValidationError):
        named = entry_field(_EVENT_DECODER, raw, field_of(exc)[0])
        if named != field_of(exc)[0]:
            return Rejection("invalid_field", f"{named}: {field_of(exc)[1]}", named)
    if "Object contains unknown field" in text:
        unknown = text.split("`")[1] if "`" in text else None
        return Rejection("unknown_field", f"unknown field '{unknown}'", unknown)
    if "missing required field" in text:
        missing = text.split("`")[1] if "`" in text else None
        return Rejection("missing_field", f"'{missing}' is required", missing)
    return Rejection("invalid_field", text, field)


def canonical_dimensions(dimensions: Mapping[str, str | int | bool] | None) -> dict[str, str]:
    """Dimension values as stored: booleans as `true`/`false`, integers in decimal."""
    if not dimensions:
        return {}
    canonical: dict[str, str] = {}
    for key, value in dimensions.items():
        if isinstance(value, str):
            canonical[key] = value
        elif isinstance(value, bool):
            canonical[key] = "true" if value else "false"
        else:
            canonical[key] = str(value)
    return canonical


def _plain(value: Decimal | None) -> str | None:
    """A decimal's canonical text: 1.50 and 1.5 alike. A whole number sent as one (the usual
    token count) is already canonical: no normalize() on the hot path."""
    if value is None:
        return None
    text = str(value)
    if "." not in text and "E" not in text:
        return text
    return format(value.normalize(), "f")


def canonical_hash(
    event: EventIn, tenant_id: str, ts: datetime, dimensions: Mapping[str, str]
) -> bytes:
    """SHA-256 of the event's meaning: equal payloads hash equal whatever their JSON spelling
    (key order, 1.50 vs 1.5, offsets of the same instant, `true` vs `"true"` as a dimension
    value). `dimensions` are the canonical ones. A single-quantity event hashes as it always
    has; a `values` event puts its sorted quantities where the event name and value go."""
    if event.values is None:
        name: str | None = event.event_name
        value: Any = _plain(event.value)
    else:
        name = None
        value = ["values", sorted((k, _plain(v)) for k, v in event.values.items())]
    canonical = [
        tenant_id,
        name,
        value,
        ts.astimezone(UTC).isoformat(),
        event.org_id,
        event.project_id,
        event.api_key_id,
        event.user_id,
        event.model,
        sorted(dimensions.items()),
        event.metadata,
    ]
    return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).digest()


def text_rejection(event: EventIn) -> Rejection | None:
    """An event holding a string PostgreSQL cannot store (a NUL character, a lone surrogate),
    named by its field. Checked before anything of the event reaches the database, the tenant
    look-up included."""
    fields = {
        "event_name": event.event_name,
        "values": None if event.values is None else list(event.values),
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


def _check_value(value: Decimal | None, meter: MeterView, field: str) -> Decimal | Rejection | None:
    """A quantity as its meter takes it (a zero of any spelling stored as 0), or why not."""
    if meter.aggregation == "unique_count":
        if value is None:
            return None
        return Rejection(
            "invalid_value",
            f"{field}: a 'unique_count' meter counts distinct values of its unique_key and "
            "takes no value; leave it out or send null",
            field,
        )
    if value is None:
        if meter.aggregation != "count":
            which = "" if field == "value" else f" ('{meter.event_name}' in values)"
            return Rejection(
                "missing_value", f"a '{meter.aggregation}' meter needs a value{which}", field
            )
        return None
    if not value.is_finite():
        return Rejection("invalid_value", f"{field} must be a finite number", field)
    if value < 0 and not meter.allow_negative:
        return Rejection(
            "invalid_value",
            f"{field} must not be negative (only sum meters with allow_negative take negative "
            "values)",
            field,
        )
    if value.adjusted() >= MAX_INTEGER_DIGITS:
        return Rejection("invalid_value", f"{field} must be below 1e{MAX_INTEGER_DIGITS}", field)
    exponent = value.as_tuple().exponent
    # Trailing zeros do not count: normalize only when the places as sent are too many.
    if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
        exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
        return Rejection(
            "invalid_value", f"{field} has more than {MAX_DECIMAL_PLACES} decimal places", field
        )
    return Decimal(0) if value == 0 else value


def _meter_of(name: str, meters: Mapping[str, MeterView], field: str) -> MeterView | Rejection:
    meter = meters.get(name)
    if meter is None:
        return Rejection("unknown_meter", f"no meter has event_name '{name}'", field)
    if meter.status != "active":
        return Rejection(
            "meter_archived", f"meter '{name}' is archived and takes no new events", field
        )
    return meter


_INT64 = -(2**63)


def _dimension_rejection(dimensions: Mapping[str, str | int | bool]) -> Rejection | None:
    """Strings are checked by the schema; integers must fit in 64 bits (their canonical text
    then stays short)."""
    for key, value in dimensions.items():
        if isinstance(value, int) and not isinstance(value, bool) and not _INT64 <= value < -_INT64:
            return Rejection(
                "invalid_dimension",
                f"dimension '{key}' is an integer beyond 64 bits; send it as a string",
                f"dimensions.{key}",
            )
    return None


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
    checked = _quantities(event, meters)
    if isinstance(checked, Rejection):
        return checked
    common = _common_fields(event, limits, [meter for meter, _ in checked])
    if isinstance(common, Rejection):
        return common
    ts, dimensions, metadata_json = common
    row = EventRow(
        tenant_id=tenant_id,
        meter_id=None,
        idempotency_key=event.idempotency_key,
        payload_hash=canonical_hash(event, tenant_id, ts, dimensions),
        value=None,
        ts=ts,
        org_id=event.org_id,
        project_id=event.project_id,
        api_key_id=event.api_key_id,
        user_id=event.user_id,
        model=event.model,
        dimensions_json=msgspec.json.encode(dimensions, order="sorted").decode(),
        metadata_json=metadata_json,
    )
    if event.values is None:
        ((meter, value),) = checked
        row.meter_id, row.value = meter.id, value
        row.has_max = meter.aggregation == "max"
        return row
    row.has_max = any(meter.aggregation == "max" for meter, _ in checked)
    # Stored and rolled up in meter id order: the same meters make the same rollup row
    # whatever order the event listed them in.
    checked.sort(key=lambda pair: pair[0].id)
    row.meter_ids = [meter.id for meter, _ in checked]
    row.quantities = [value for _, value in checked]
    # Each meter keeps the dimensions it declares: when some meters keep fewer than the
    # event's, the event is rolled up as one part per set of kept dimensions.
    if dimensions and _some_meter_lacks(dimensions.keys(), checked):
        by_kept: dict[str, tuple[list[int], list[Decimal | None]]] = {}
        for meter, value in checked:
            own = {k: v for k, v in dimensions.items() if k in meter.dimensions}
            part = by_kept.setdefault(msgspec.json.encode(own, order="sorted").decode(), ([], []))
            part[0].append(meter.id)
            part[1].append(value)
        row.parts = [(ids, values, kept) for kept, (ids, values) in by_kept.items()]
    return row


def _some_meter_lacks(keys: Any, checked: list[tuple[MeterView, Decimal | None]]) -> bool:
    """Whether a meter of the event does not declare every one of its dimension keys. Meters
    declaring the same set share one frozenset (the reference cache interns them), so the
    usual call (an LLM call's meters, all alike) tests it once."""
    tested = None
    for meter, _ in checked:
        declared = meter.dimensions
        if declared is not tested:
            if not keys <= declared:
                return True
            tested = declared
    return False


def _quantities(
    event: EventIn, meters: Mapping[str, MeterView]
) -> list[tuple[MeterView, Decimal | None]] | Rejection:
    """The event's quantities with their meters, each checked by its meter; one for an
    event_name + value event."""
    if event.values is None:
        if event.event_name is None:
            return Rejection(
                "missing_field", "'event_name' (or 'values') is required", "event_name"
            )
        pairs: dict[str, Decimal | None] = {event.event_name: event.value}
        fields = {event.event_name: ("event_name", "value")}
    else:
        if event.event_name is not None or event.value is not None:
            both = "event_name" if event.event_name is not None else "value"
            return Rejection(
                "invalid_event",
                f"an event carries either event_name + value or values, not both ('{both}')",
                both,
            )
        pairs = event.values
        fields = {name: (f"values.{name}", f"values.{name}") for name in pairs}
    checked: list[tuple[MeterView, Decimal | None]] = []
    for name, raw in pairs.items():
        name_field, value_field = fields[name]
        meter = _meter_of(name, meters, name_field)
        if isinstance(meter, Rejection):
            return meter
        value = _check_value(raw, meter, value_field)
        if isinstance(value, Rejection):
            return value
        checked.append((meter, value))
    return checked


def _common_fields(
    event: EventIn, limits: Limits, meters: list[MeterView]
) -> tuple[datetime, dict[str, str], str | None] | Rejection:
    """Checks shared by both forms: the time, the dimensions (declared by at least one of the
    event's meters) and the metadata. Returns the UTC time, the canonical dimensions and the
    metadata as JSON."""
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
    if event.dimensions:
        if (bad := _dimension_rejection(event.dimensions)) is not None:
            return bad
        keys = event.dimensions.keys()
        # Usually the first meter declares them all (an LLM call's meters share theirs).
        declared = meters[0].dimensions
        if not keys <= declared:
            for meter in meters[1:]:
                declared = declared | meter.dimensions
        undeclared = sorted(keys - declared)
        if undeclared:
            names = ", ".join(f"'{m.event_name}'" for m in meters)
            listed = ", ".join(sorted(declared)) or "none"
            by = f"meter {names}" if len(meters) == 1 else f"any of the meters {names}"
            return Rejection(
                "undeclared_dimension",
                f"dimension '{undeclared[0]}' is not declared by {by} (declared: {listed})",
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
    return ts, canonical_dimensions(event.dimensions), metadata_json
