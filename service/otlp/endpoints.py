from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

from service.common.auth import Scope, current_principal, requires
from service.common.openapi_contract import PROBLEM_STATUSES
from service.otlp.service import OtlpReceiver
from service.otlp.wire import decode_export, decompress, encode_response, encoding_of
from service.settings import Settings

_EXPORT = Schema(
    type=OpenAPIType.OBJECT,
    description="An OTLP/JSON ExportMetricsServiceRequest (opentelemetry-proto)",
    # protobuf's JSON mapping reads null as an empty list
    properties={"resourceMetrics": Schema(type=[OpenAPIType.ARRAY, OpenAPIType.NULL])},
)
_ANSWER = Schema(
    type=OpenAPIType.OBJECT,
    description="An OTLP/JSON ExportMetricsServiceResponse; `partialSuccess` when points "
    "were rejected",
    properties={
        "partialSuccess": Schema(
            type=OpenAPIType.OBJECT,
            properties={
                "rejectedDataPoints": Schema(type=OpenAPIType.STRING),
                "errorMessage": Schema(type=OpenAPIType.STRING),
            },
        )
    },
)
_BINARY = Schema(type=OpenAPIType.STRING, description="protobuf bytes")


@dataclass
class ExportOperation(Operation):
    """Documents the OTLP bodies, which the handler reads raw."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="OTLP/HTTP: protobuf or JSON, optionally `Content-Encoding: gzip`",
            content={
                "application/json": OpenAPIMediaType(schema=_EXPORT),
                "application/x-protobuf": OpenAPIMediaType(schema=_BINARY),
            },
        )
        self.responses = {
            "200": OpenAPIResponse(
                description="The OTLP answer, in the request's encoding",
                content={
                    "application/json": OpenAPIMediaType(schema=_ANSWER),
                    "application/x-protobuf": OpenAPIMediaType(schema=_BINARY),
                },
            )
        }


class OtlpController(Controller):
    path = "/otlp/v1"
    tags = ["opentelemetry"]

    @post(
        "/metrics",
        summary="Receive OpenTelemetry metrics (OTLP/HTTP)",
        status_code=200,
        guards=[requires(Scope.INGEST)],
        operation_class=ExportOperation,
        opt={PROBLEM_STATUSES: ["400", "415"]},
        description="Delta sums and histograms of metrics that meters map (`otel` on the "
        "meter) become usage events; points of other metrics are ignored. The tenant is the "
        "key's, or the resource attribute `tenant.id`. 200 with the OTLP response, whose "
        "`partial_success` counts the rejected points and says why (cumulative temporality, "
        "gauges, invalid values); 400 when the body is not an OTLP export.",
    )
    async def export_metrics(
        self, request: Request[Any, Any, Any], settings: Settings
    ) -> Response[bytes]:
        encoding = encoding_of(request.headers.get("content-type"))
        body = decompress(
            await request.body(), request.headers.get("content-encoding"), settings.max_body_bytes
        )
        export = decode_export(body, encoding)
        receiver: OtlpReceiver = request.app.state.otlp_receiver
        outcome = await receiver.export(export, current_principal(request))
        return Response(
            encode_response(outcome.rejected, outcome.error_message, encoding),
            status_code=200,
            media_type=encoding.value,
        )
