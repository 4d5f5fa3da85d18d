"""POST /otlp/v1/metrics in process: decoding (protobuf, JSON, gzip), the mapping of metrics
and attributes to meters and fields, tenants, idempotency and the partial-success answer."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from google.protobuf import json_format
from litestar import Litestar
from litestar.testing import AsyncTestClient
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from tests.conftest import Keys
from tests.otlp.conftest import map_meters, usage
from tests.otlp.exports import (
    CUMULATIVE,
    TOKEN_USAGE,
    counter,
    export,
    gauge,
    histogram,
    interval,
)

Client = AsyncTestClient[Litestar]
PATH = "/otlp/v1/metrics"
PROTOBUF = {"content-type": "application/x-protobuf"}
CALL = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "user.id": "u-7",
    "server.address": "api.openai.com",  # not mapped: ignored
}


@pytest.fixture
async def ingest(client: Client, keys: Keys) -> dict[str, str]:
    await map_meters(client, keys.admin)
    return await keys.make("ingest", "read")


async def send(
    client: Client, request: ExportMetricsServiceRequest, headers: dict[str, str]
) -> ExportMetricsServiceResponse:
    answer = await client.post(
        PATH, content=request.SerializeToString(), headers={**headers, **PROTOBUF}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-protobuf"
    response = ExportMetricsServiceResponse()
    response.ParseFromString(answer.content)
    return response


def otlp_json(request: ExportMetricsServiceRequest) -> bytes:
    """OTLP/JSON as exporters write it: lowerCamelCase keys, enums as integers."""
    return json_format.MessageToJson(request, use_integers_for_enums=True).encode()


def token_usage(when: tuple[int, int], **extra: Any) -> Any:
    """Three calls: 1000 + 200 + 34 input tokens, 212 output tokens in all."""
    return histogram(
        TOKEN_USAGE,
        [
            ({**CALL, **extra, "gen_ai.token.type": "input"}, 3, 1234.0),
            ({**CALL, **extra, "gen_ai.token.type": "output"}, 3, 212.0),
        ],
        when=when,
    )


async def test_delta_histogram_and_counter_become_usage_once(
    client: Client, ingest: dict[str, str]
) -> None:
    when = interval()
    request = export(
        token_usage(when),
        counter("app.requests", [({"region": "eu"}, 5), ({"region": "us"}, 2)], when=when),
        counter("http.server.active", [({}, 9)], when=when),  # no meter maps it: ignored
        resource={"tenant.id": "acme", "service.name": "gateway"},
    )
    first = await send(client, request, ingest)
    assert not first.HasField("partial_success"), first
    by_model = await usage(client, ingest, "input_tokens", group_by=["model", "requested_model"])
    assert by_model == {("gpt-4o-2024-08-06", "gpt-4o"): ("1234", 1)}
    assert await usage(client, ingest, "output_tokens", group_by=["provider", "operation"]) == {
        ("openai", "chat"): ("212", 1)
    }
    # The count meter counts the calls (the input points' count), not the data points.
    assert await usage(client, ingest, "llm_requests", group_by=["user_id"]) == {("u-7",): ("3", 3)}
    # Attributes other than the standard ones are not mapped (not even to a dimension of the
    # same name); points differing in them are still separate usage.
    assert await usage(client, ingest, "api_calls", group_by=["region"]) == {(None,): ("7", 2)}
    # An exporter retrying the same export: every point is a duplicate, nothing changes.
    again = await send(client, request, ingest)
    assert not again.HasField("partial_success"), again
    assert await usage(client, ingest, "input_tokens") == {(): ("1234", 1)}
    assert await usage(client, ingest, "llm_requests") == {(): ("3", 3)}
    assert await usage(client, ingest, "api_calls") == {(): ("7", 2)}
    # The next interval is new usage.
    later = interval(minutes_ago=4)
    await send(client, export(token_usage(later), resource={"tenant.id": "acme"}), ingest)
    assert await usage(client, ingest, "input_tokens") == {(): ("2468", 2)}


async def test_cumulative_points_are_refused_saying_to_export_delta(
    client: Client, ingest: dict[str, str]
) -> None:
    when = interval()
    request = export(
        counter(
            "app.requests", [({}, 5), ({"region": "eu"}, 1)], when=when, temporality=CUMULATIVE
        ),
        counter("app.requests", [({"region": "us"}, 2)], when=when),
        resource={"tenant.id": "acme"},
    )
    response = await send(client, request, ingest)
    assert response.partial_success.rejected_data_points == 2
    message = response.partial_success.error_message
    assert "cumulative temporality is not accepted" in message
    assert "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta" in message
    assert await usage(client, ingest, "api_calls") == {(): ("2", 1)}


async def test_partial_success_counts_each_rejected_point(
    client: Client, ingest: dict[str, str]
) -> None:
    when = interval()
    request = export(
        counter(
            "app.requests",
            [
                ({"region": "eu"}, 5),
                ({"region": "us"}, -1.5),  # negative: invalid
                ({"user.id": "x" * 300}, 1),  # over 255 characters
            ],
            when=when,
        ),
        gauge("app.requests", 3.0, when=when),  # a gauge of a mapped name: not usage
        resource={"tenant.id": "acme"},
    )
    response = await send(client, request, ingest)
    assert response.partial_success.rejected_data_points == 3, response
    message = response.partial_success.error_message
    assert "must not be negative" in message
    assert "gauge is not usage" in message
    assert "length <= 255" in message
    assert await usage(client, ingest, "api_calls") == {(): ("5", 1)}
    # Points too old for the late-arrival window are refused the same way.
    old = export(
        counter("app.requests", [({}, 1)], when=interval(minutes_ago=60 * 24 * 40)),
        resource={"tenant.id": "acme"},
    )
    refused = await send(client, old, ingest)
    assert refused.partial_success.rejected_data_points == 1
    assert "late-arrival window" in refused.partial_success.error_message


async def test_json_and_gzip_bodies(client: Client, ingest: dict[str, str]) -> None:
    when = interval()
    request = export(
        counter("app.requests", [({"region": "eu"}, 4)], when=when),
        resource={"tenant.id": "acme"},
    )
    body = otlp_json(request)
    assert b'"resourceMetrics"' in body and b'"aggregationTemporality": 1' in body
    answer = await client.post(
        PATH, content=body, headers={**ingest, "content-type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {}
    # The same export again, gzip-compressed protobuf: a duplicate of the JSON one.
    answer = await client.post(
        PATH,
        content=gzip.compress(request.SerializeToString()),
        headers={**ingest, **PROTOBUF, "content-encoding": "gzip"},
    )
    assert answer.status_code == 200, answer.text
    # And gzip-compressed JSON with a rejected point: the JSON answer says so.
    cumulative = export(
        counter("app.requests", [({}, 1)], when=when, temporality=CUMULATIVE),
        resource={"tenant.id": "acme"},
    )
    answer = await client.post(
        PATH,
        content=gzip.compress(otlp_json(cumulative)),
        headers={**ingest, "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert answer.status_code == 200, answer.text
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedDataPoints"] == "1"
    assert "export delta" in partial["errorMessage"]
    assert await usage(client, ingest, "api_calls") == {(): ("4", 1)}


@pytest.mark.parametrize(
    ("content_type", "body", "encoding"),
    [
        ("application/x-protobuf", b"this is not OTLP at all", None),
        ("application/x-protobuf", b"\xff\xff\xff\xff", None),
        ("application/json", b"not json", None),
        ("application/json", b'{"hello": "world"}', None),
        ("application/json", b"[1, 2]", None),
        ("application/json", b'{"resourceMetrics": [{"resource": 5}]}', None),
        ("application/x-protobuf", b"not gzip", "gzip"),
    ],
)
async def test_a_body_that_is_not_otlp_is_a_400(
    client: Client,
    ingest: dict[str, str],
    content_type: str,
    body: bytes,
    encoding: str | None,
) -> None:
    headers = {**ingest, "content-type": content_type}
    if encoding:
        headers["content-encoding"] = encoding
    answer = await client.post(PATH, content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_otlp"


async def test_other_media_types_are_a_415(client: Client, ingest: dict[str, str]) -> None:
    for headers in (
        {"content-type": "text/plain"},
        {"content-type": "application/x-protobuf", "content-encoding": "br"},
    ):
        answer = await client.post(PATH, content=b"", headers={**ingest, **headers})
        assert answer.status_code == 415, answer.text


async def test_tenant_from_the_key_or_the_resource(
    client: Client, ingest: dict[str, str], keys: Keys
) -> None:
    when = interval()
    points = counter("app.requests", [({}, 1)], when=when)
    # An unbound key without tenant.id: nobody to bill.
    response = await send(client, export(points), ingest)
    assert response.partial_success.rejected_data_points == 1
    assert "tenant.id" in response.partial_success.error_message
    # A key bound to globex: its tenant, whatever the resource lacks...
    globex = await keys.make("ingest", tenant_id="globex")
    assert not (await send(client, export(points), globex)).HasField("partial_success")
    # ...but never another tenant's.
    refused = await send(client, export(points, resource={"tenant.id": "acme"}), globex)
    assert refused.partial_success.rejected_data_points == 1
    assert "bound to tenant 'globex'" in refused.partial_success.error_message
    assert await usage(client, ingest, "api_calls", tenant="globex") == {(): ("1", 1)}
    assert await usage(client, ingest, "api_calls", tenant="acme") == {}
    # An unknown tenant is refused per point, like an event naming it.
    unknown = await send(client, export(points, resource={"tenant.id": "nobody"}), ingest)
    assert "tenant 'nobody' does not exist" in unknown.partial_success.error_message


async def test_the_receiver_needs_the_ingest_scope(client: Client, keys: Keys) -> None:
    body = export().SerializeToString()
    assert (await client.post(PATH, content=body, headers=PROTOBUF)).status_code == 401
    reader = await keys.make("read")
    answer = await client.post(PATH, content=body, headers={**reader, **PROTOBUF})
    assert answer.status_code == 403


async def test_the_idempotency_key_covers_resource_scope_attributes_and_interval(
    client: Client, ingest: dict[str, str]
) -> None:
    when = interval()

    def one(**changes: Any) -> ExportMetricsServiceRequest:
        return export(
            counter(
                "app.requests", [(changes.get("attrs", {}), 1)], when=changes.get("when", when)
            ),
            resource={"tenant.id": "acme", "service.name": changes.get("service", "a")},
            scope=changes.get("scope", "app"),
        )

    for request in (
        one(),
        one(),  # a retry: duplicate
        one(service="b"),
        one(scope="other"),
        one(attrs={"region": "eu"}),
        one(when=(when[0] - 1, when[1])),
    ):
        assert not (await send(client, request, ingest)).HasField("partial_success")
    assert await usage(client, ingest, "api_calls") == {(): ("5", 5)}


async def test_meters_validate_their_otel_mapping(client: Client, keys: Keys) -> None:
    meter = {"event_name": "calls", "name": "Calls", "aggregation": "count", "billable": False}
    for otel, field in (
        ({"metric": "1bad"}, "otel.metric"),
        ({"metric": "ok", "attributes": {"k": 1}}, "otel.attributes"),
        ({"attributes": {}}, "otel"),
        ({"metric": "ok", "extra": 1}, "otel"),
    ):
        answer = await client.post("/v1/meters", json={**meter, "otel": otel}, headers=keys.admin)
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"].startswith(field), (otel, answer.text)
    created = await client.post(
        "/v1/meters", json={**meter, "otel": {"metric": "rpc.calls"}}, headers=keys.admin
    )
    assert created.status_code == 201, created.text
    assert created.json()["otel"] == {"metric": "rpc.calls", "attributes": {}}
    cleared = await client.patch("/v1/meters/calls", json={"otel": None}, headers=keys.admin)
    assert cleared.json()["otel"] is None
