"""A real OpenTelemetry SDK and its OTLP/HTTP exporter, pointed at the service as it runs
(`python -m service serve`), export a counter and a `gen_ai.client.token.usage` histogram with
delta temporality: usage equals what was recorded, re-sending the same export changes
nothing, and a cumulative export is refused with a message saying to export delta."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from tests.conftest import TEST_SECRET, Keys
from tests.otlp.conftest import map_meters, usage
from tests.otlp.exports import TOKEN_USAGE
from tests.support.live_server import live_server, service_environment

DELTA = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
CUMULATIVE = {
    Counter: AggregationTemporality.CUMULATIVE,
    Histogram: AggregationTemporality.CUMULATIVE,
}
CALLS = [  # (model asked for, model that answered, input tokens, output tokens)
    ("gpt-4o", "gpt-4o-2024-08-06", 1834, 212),
    ("gpt-4o", "gpt-4o-2024-08-06", 50, 7),
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", 900, 40),
]


@pytest.fixture(scope="module")
def base_url(database_url: str) -> Iterator[str]:
    env = {
        **service_environment(database_url, TEST_SECRET),
        # Each test maps its meters and makes its keys afresh on a truncated database.
        "METERING_API_KEY_CACHE_SECONDS": "0",
        "METERING_REFERENCE_CACHE_SECONDS": "0.2",
        "METERING_ROLLUP_FOLD_INTERVAL_SECONDS": "0",
    }
    with live_server(env) as base:
        yield base


class RecordingExporter(OTLPMetricExporter):
    """The SDK's OTLP/HTTP exporter, keeping what it exported and the service's answers."""

    def __init__(self, base_url: str, key: str, temporality: dict[type, Any]) -> None:
        self.answers: list[requests.Response] = []
        self.exported: list[MetricsData] = []
        session = requests.Session()
        session.trust_env = False  # never through a proxy to the local server
        session.hooks["response"].append(lambda answer, *_, **__: self.answers.append(answer))
        super().__init__(
            endpoint=f"{base_url}/otlp/v1/metrics",
            headers={"Authorization": f"Bearer {key}"},
            compression=Compression.Gzip,  # as exporters send by default
            session=session,
            preferred_temporality=temporality,
        )

    def export(self, metrics_data: MetricsData, *args: Any, **kwargs: Any) -> MetricExportResult:
        self.exported.append(metrics_data)
        return super().export(metrics_data, *args, **kwargs)

    def last_answer(self) -> ExportMetricsServiceResponse:
        assert self.answers, "nothing was exported"
        answer = self.answers[-1]
        assert answer.status_code == 200, answer.text
        response = ExportMetricsServiceResponse()
        response.ParseFromString(answer.content)
        return response


def record_calls(exporter: RecordingExporter) -> MeterProvider:
    """An instrumented app: an LLM client recording token usage as the GenAI semantic
    conventions say, and a request counter; the reader exports on force_flush."""
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "gateway", "tenant.id": "acme"}),
    )
    meter = provider.get_meter("gen_ai.client", "1.0")
    tokens = meter.create_histogram(TOKEN_USAGE, unit="{token}")
    requests_counter = meter.create_counter("app.requests")
    for requested, answered, input_tokens, output_tokens in CALLS:
        common = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": requested,
            "gen_ai.response.model": answered,
        }
        tokens.record(input_tokens, {**common, "gen_ai.token.type": "input"})
        tokens.record(output_tokens, {**common, "gen_ai.token.type": "output"})
        requests_counter.add(1, {"http.route": "/chat"})
    return provider


async def test_sdk_delta_export_is_usage_exactly_once(base_url: str, keys: Keys) -> None:
    async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
        await map_meters(client, keys.admin)
        ingest = await keys.make("ingest", "read")
        await asyncio.sleep(0.3)  # past the server's reference cache
        exporter = RecordingExporter(base_url, ingest["Authorization"][7:], DELTA)
        provider = record_calls(exporter)
        assert await asyncio.to_thread(provider.force_flush)
        assert not exporter.last_answer().HasField("partial_success"), exporter.last_answer()

        by_model = await usage(client, ingest, "input_tokens", group_by=["model"])
        assert by_model == {
            ("gpt-4o-2024-08-06",): ("1884", 1),
            ("gpt-4o-mini-2024-07-18",): ("900", 1),
        }
        by_requested = await usage(client, ingest, "output_tokens", group_by=["requested_model"])
        assert by_requested == {("gpt-4o",): ("219", 1), ("gpt-4o-mini",): ("40", 1)}
        assert await usage(client, ingest, "llm_requests", group_by=["provider"]) == {
            ("openai",): ("3", 3)
        }
        assert await usage(client, ingest, "api_calls") == {(): ("3", 1)}

        # The exporter sends the same export again (a retry after a lost answer): duplicates.
        result = await asyncio.to_thread(exporter.export, exporter.exported[0])
        assert result is MetricExportResult.SUCCESS
        assert not exporter.last_answer().HasField("partial_success")
        assert await usage(client, ingest, "input_tokens") == {(): ("2784", 2)}
        assert await usage(client, ingest, "llm_requests") == {(): ("3", 3)}
        assert await usage(client, ingest, "api_calls") == {(): ("3", 1)}

        # Nothing recorded since: a delta reader exports no points, usage stays.
        assert await asyncio.to_thread(provider.force_flush)
        assert await usage(client, ingest, "input_tokens") == {(): ("2784", 2)}
        await asyncio.to_thread(provider.shutdown)


async def test_sdk_cumulative_export_is_refused_saying_to_export_delta(
    base_url: str, keys: Keys
) -> None:
    async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
        await map_meters(client, keys.admin)
        ingest = await keys.make("ingest", "read")
        await asyncio.sleep(0.3)
        exporter = RecordingExporter(base_url, ingest["Authorization"][7:], CUMULATIVE)
        provider = record_calls(exporter)
        assert await asyncio.to_thread(provider.force_flush)
        answer = exporter.last_answer()
        # 2 input and 2 output histogram points (one per model), 1 counter point: all refused.
        assert answer.partial_success.rejected_data_points == 5, answer
        message = answer.partial_success.error_message
        assert "cumulative temporality is not accepted" in message, message
        assert "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta" in message, message
        assert json_format.MessageToDict(answer)["partialSuccess"]["rejectedDataPoints"] == "5"
        assert await usage(client, ingest, "input_tokens") == {}
        assert await usage(client, ingest, "api_calls") == {}
        await asyncio.to_thread(provider.shutdown)
