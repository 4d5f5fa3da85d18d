"""OTLP export requests built from opentelemetry-proto's messages, as exporters send them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
TOKEN_USAGE = "gen_ai.client.token.usage"


def nanos(instant: datetime) -> int:
    return int(instant.timestamp()) * 1_000_000_000 + instant.microsecond * 1000


def interval(minutes_ago: float = 5, seconds: float = 60) -> tuple[int, int]:
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)
    return nanos(end - timedelta(seconds=seconds)), nanos(end)


def attributes(values: Mapping[str, Any]) -> list[KeyValue]:
    pairs = []
    for key, value in values.items():
        if isinstance(value, bool):
            any_value = AnyValue(bool_value=value)
        elif isinstance(value, int):
            any_value = AnyValue(int_value=value)
        elif isinstance(value, float):
            any_value = AnyValue(double_value=value)
        else:
            any_value = AnyValue(string_value=value)
        pairs.append(KeyValue(key=key, value=any_value))
    return pairs


def counter(
    name: str,
    points: Sequence[tuple[Mapping[str, Any], int | float]],
    *,
    when: tuple[int, int],
    temporality: int = DELTA,
) -> Metric:
    start, end = when
    data = []
    for attrs, value in points:
        point = NumberDataPoint(
            attributes=attributes(attrs), start_time_unix_nano=start, time_unix_nano=end
        )
        if isinstance(value, int):
            point.as_int = value
        else:
            point.as_double = value
        data.append(point)
    return Metric(
        name=name,
        sum=Sum(data_points=data, aggregation_temporality=temporality, is_monotonic=True),  # type: ignore[arg-type]
    )


def histogram(
    name: str,
    points: Sequence[tuple[Mapping[str, Any], int, float]],
    *,
    when: tuple[int, int],
    temporality: int = DELTA,
) -> Metric:
    """Points of (attributes, count, sum)."""
    start, end = when
    data = [
        HistogramDataPoint(
            attributes=attributes(attrs),
            start_time_unix_nano=start,
            time_unix_nano=end,
            count=count,
            sum=total,
        )
        for attrs, count, total in points
    ]
    return Metric(
        name=name,
        histogram=Histogram(data_points=data, aggregation_temporality=temporality),  # type: ignore[arg-type]
    )


def gauge(name: str, value: float, *, when: tuple[int, int]) -> Metric:
    return Metric(
        name=name,
        gauge=Gauge(data_points=[NumberDataPoint(time_unix_nano=when[1], as_double=value)]),
    )


def export(
    *metrics: Metric, resource: Mapping[str, Any] | None = None, scope: str = "app"
) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.extend(attributes(resource or {}))
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.name = scope
    scope_metrics.metrics.extend(metrics)
    return request
