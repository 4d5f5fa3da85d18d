"""OTLP metrics to usage events. Each data point of a metric that a meter maps becomes one
event (of several meters' quantities when several meters map it), built as a client would
send it and ingested through the same Ingestor as POST /v1/events/batch: the same validation,
idempotency and rollups.

- Only delta sums and histograms (explicit or exponential) are usage: a cumulative point
  repeats what earlier points counted, and a gauge is not an amount. Points of a mapped
  metric with another temporality or type are rejected with a message saying what to export;
  metrics no meter maps are ignored.
- A `sum` or `last` meter takes the point's value (a histogram's sum). A `count` meter counts
  events, so it is given the point's count (a histogram's count, a sum's whole value) as that
  many events: the point's event counts once and `count - 1` more events carry only the count
  meters, under keys derived from the point's.
- The idempotency key is a hash of the resource's attributes, the scope, the metric name, the
  point's attributes and its [start, end): an exporter retrying an export sends the same
  points, which are then duplicates."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from service.common.auth import Principal
from service.events.reference import MeterView
from service.events.schemas import EventIn
from service.events.service import Ingestor
from service.events.validation import Rejection, decode_error

TENANT_ATTRIBUTE = "tenant.id"
# Attributes that become an event's attribution fields.
FIELD_ATTRIBUTES = {"gen_ai.response.model": "model", "user.id": "user_id"}
# Attributes that become dimensions, where one of the event's meters declares them; the first
# present wins (gen_ai.system is the older name of gen_ai.provider.name).
DIMENSION_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "requested_model": ("gen_ai.request.model",),
    "provider": ("gen_ai.provider.name", "gen_ai.system"),
    "operation": ("gen_ai.operation.name",),
}
# A count meter's quantity is stored as that many events: bounded per point and per export.
MAX_COUNT_PER_POINT = 10_000
MAX_EVENTS_PER_EXPORT = 100_000
MAX_REASONS = 5
_NO_RECORDED_VALUE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_EXPORT_DELTA = "export delta temporality (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta)"


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    """What became of the data points of mapped metrics (points no meter maps are not
    counted)."""

    points: int
    rejected: int
    error_message: str


class _Rejections:
    def __init__(self) -> None:
        self.points = 0
        self.reasons: Counter[str] = Counter()

    def add(self, reason: str, points: int = 1) -> None:
        if points:
            self.points += points
            self.reasons[reason] += points

    def message(self) -> str:
        listed = [
            f"{reason} ({n} point{'s' if n > 1 else ''})"
            for reason, n in self.reasons.most_common(MAX_REASONS)
        ]
        more = len(self.reasons) - MAX_REASONS
        if more > 0:
            listed.append(f"and {more} more reason{'s' if more > 1 else ''}")
        return "; ".join(listed)


class OtlpReceiver:
    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    async def export(
        self, request: ExportMetricsServiceRequest, principal: Principal
    ) -> ExportOutcome:
        by_metric: dict[str, list[MeterView]] = {}
        for meter in (await self.ingestor.reference.meters()).values():
            if meter.otel_metric is not None:
                by_metric.setdefault(meter.otel_metric, []).append(meter)
        rejections = _Rejections()
        events: list[EventIn | Rejection] = []
        point_of_event: list[tuple[int, str]] = []  # (point number, metric name) per event
        points = 0
        for resource_metrics in request.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            tenant_id, tenant_problem = _tenant(resource, principal)
            for scope_metrics in resource_metrics.scope_metrics:
                scope = [scope_metrics.scope.name, scope_metrics.scope.version]
                for metric in scope_metrics.metrics:
                    meters = by_metric.get(metric.name)
                    if not meters:
                        continue
                    data_points = _data_points(metric)
                    refusal = tenant_problem or _refusal(metric)
                    if refusal is not None:
                        points += len(data_points)
                        rejections.add(f"{metric.name}: {refusal}", len(data_points))
                        continue
                    for point in data_points:
                        if point.flags & _NO_RECORDED_VALUE:
                            continue
                        attributes = _attributes(point.attributes)
                        matched = _matching(meters, {**resource, **attributes})
                        if not matched:
                            continue
                        points += 1
                        key = _idempotency_key(resource, scope, metric.name, attributes, point)
                        built = _point_events(
                            point, metric, matched, {**resource, **attributes}, tenant_id, key
                        )
                        if isinstance(built, str):
                            rejections.add(f"{metric.name}: {built}")
                            continue
                        if len(events) + len(built) > MAX_EVENTS_PER_EXPORT:
                            rejections.add(
                                f"{metric.name}: the export holds more than "
                                f"{MAX_EVENTS_PER_EXPORT} events' worth of points; export "
                                "more often"
                            )
                            continue
                        events.extend(built)
                        point_of_event.extend([(points, metric.name)] * len(built))
        if events:
            results = await self.ingestor.ingest_events(events, principal)
            failed: dict[int, str] = {}
            for result in results:
                if result.status in ("invalid", "conflict") and result.error is not None:
                    number, name = point_of_event[result.index]
                    failed.setdefault(number, f"{name}: {result.error.message}")
            for reason in failed.values():
                rejections.add(reason)
        return ExportOutcome(
            points=points, rejected=rejections.points, error_message=rejections.message()
        )


def _data_points(metric: Metric) -> Sequence[Any]:
    kind = metric.WhichOneof("data")
    if kind is None:
        return ()
    return getattr(metric, kind).data_points  # type: ignore[no-any-return]


def _refusal(metric: Metric) -> str | None:
    """Why no point of this metric is usage, or None."""
    kind = metric.WhichOneof("data")
    if kind in ("gauge", "summary"):
        return f"a {kind} is not usage: map a counter or histogram with delta temporality"
    if kind in ("sum", "histogram", "exponential_histogram"):
        temporality = getattr(metric, kind).aggregation_temporality
        if temporality != _DELTA:
            name = "cumulative" if temporality else "unspecified"
            return f"{name} temporality is not accepted: {_EXPORT_DELTA}"
    return None


def _tenant(resource: Mapping[str, Any], principal: Principal) -> tuple[str | None, str | None]:
    """(the tenant_id events carry, or None for the key's own; why the resource's points are
    refused, or None)."""
    given = _text(resource.get(TENANT_ATTRIBUTE))
    if principal.tenant_id is not None:
        if given is not None and given != principal.tenant_id:
            return None, (
                f"this API key is bound to tenant '{principal.tenant_id}' and cannot write "
                f"usage for '{given}' (resource attribute {TENANT_ATTRIBUTE})"
            )
        return None, None
    if given is None:
        return None, (
            f"no tenant: set the resource attribute {TENANT_ATTRIBUTE} "
            f"(OTEL_RESOURCE_ATTRIBUTES={TENANT_ATTRIBUTE}=...) or use an API key bound to a "
            "tenant"
        )
    return given, None


def _value(value: AnyValue) -> Any:
    """An attribute value as plain JSON-able data, its type kept (for the idempotency key)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {"kv": _attributes(value.kvlist_value.values)}
    if kind == "bytes_value":
        return {"bytes": value.bytes_value.hex()}
    return None if kind is None else getattr(value, kind)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _text(value: Any) -> str | None:
    """An attribute value as a field or dimension takes it (scalars only)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float):
        return repr(value)
    return None


def _matching(meters: Sequence[MeterView], attributes: Mapping[str, Any]) -> list[MeterView]:
    return [
        meter
        for meter in meters
        if all(_text(attributes.get(key)) == wanted for key, wanted in meter.otel_attributes)
    ]


def _idempotency_key(
    resource: Mapping[str, Any],
    scope: list[str],
    metric: str,
    attributes: Mapping[str, Any],
    point: Any,
) -> str:
    identity = [
        resource,
        scope,
        metric,
        attributes,
        point.start_time_unix_nano,
        point.time_unix_nano,
    ]
    digest = hashlib.sha256(msgspec.json.encode(identity, order="sorted")).hexdigest()
    return f"otlp:{digest}"


def _amount(point: Any, metric: Metric) -> Decimal | None:
    """The point's value: a sum's value, a histogram's sum (None when it has none)."""
    if metric.WhichOneof("data") == "sum":
        if point.WhichOneof("value") == "as_int":
            return Decimal(point.as_int)
        return _decimal(point.as_double)
    return _decimal(point.sum) if point.HasField("sum") else None


def _decimal(value: float) -> Decimal:
    """The shortest decimal that reads back as the float (0.1, not 0.1000000000000000055...);
    whole numbers without a fraction (SDK histograms sum integer tokens as floats)."""
    if value.is_integer():
        return Decimal(int(value))
    return Decimal(repr(value))


def _count(point: Any, metric: Metric) -> int | str:
    """How many times a count meter counts the point, or why it cannot."""
    if metric.WhichOneof("data") != "sum":
        return int(point.count)
    amount = _amount(point, metric)
    if amount is None or not amount.is_finite() or amount < 0 or amount != amount.to_integral():
        return f"a count meter takes whole, non-negative sums; got {amount}"
    return int(amount)


def _point_events(
    point: Any,
    metric: Metric,
    meters: Sequence[MeterView],
    attributes: Mapping[str, Any],
    tenant_id: str | None,
    key: str,
) -> list[EventIn | Rejection] | str:
    """The point's events, or why it is refused. An empty list: nothing to record (a point
    counting zero, for count meters only)."""
    if not point.time_unix_nano:
        return "the data point has no time"
    values: dict[str, Decimal | None] = {}
    counted = [meter for meter in meters if meter.aggregation == "count"]
    count = 0
    if counted:
        found = _count(point, metric)
        if isinstance(found, str):
            return found
        if found > MAX_COUNT_PER_POINT:
            return (
                f"a count meter takes at most {MAX_COUNT_PER_POINT} per data point (got "
                f"{found}); export more often, or map a sum meter"
            )
        count = found
    for meter in meters:
        if meter.aggregation == "count":
            if count:
                values[meter.event_name] = None
            continue
        amount = _amount(point, metric)
        if amount is None:
            return f"the histogram point has no sum for meter '{meter.event_name}'"
        values[meter.event_name] = amount
    if not values:
        return []
    base: dict[str, Any] = {
        "timestamp": _EPOCH + timedelta(microseconds=point.time_unix_nano // 1000),
        "tenant_id": tenant_id,
        "metadata": {"otel_metric": metric.name},
    }
    for attribute, field in FIELD_ATTRIBUTES.items():
        if (text := _text(attributes.get(attribute))) is not None:
            base[field] = text
    declared = frozenset().union(*(meter.dimensions for meter in meters))
    dimensions = {}
    for dimension, sources in DIMENSION_ATTRIBUTES.items():
        if dimension not in declared:
            continue
        found_text = next((t for s in sources if (t := _text(attributes.get(s))) is not None), None)
        if found_text is not None:
            dimensions[dimension] = found_text
    if dimensions:
        base["dimensions"] = dimensions
    events = [_event({**base, "idempotency_key": key}, values)]
    only_counted = {meter.event_name: None for meter in counted}
    events.extend(
        _event({**base, "idempotency_key": f"{key}:{n}"}, only_counted) for n in range(2, count + 1)
    )
    return events


def _event(fields: dict[str, Any], values: Mapping[str, Decimal | None]) -> EventIn | Rejection:
    """An event as the batch endpoint would decode it: the same schema checks (lengths of
    attribute values, say) apply."""
    if len(values) == 1:
        ((name, value),) = values.items()
        fields = {**fields, "event_name": name, "value": value}
    else:
        fields = {**fields, "values": dict(values)}
    try:
        return msgspec.convert(fields, EventIn)
    except msgspec.ValidationError as exc:
        return decode_error(exc)
