"""OTLP/HTTP on the wire: the request body (protobuf or JSON, optionally gzip-compressed) to
an ExportMetricsServiceRequest, and the ExportMetricsServiceResponse back in the request's
encoding. Messages are opentelemetry-proto's own; JSON goes through protobuf's JSON mapping,
which OTLP/JSON follows (lowerCamelCase keys, 64-bit integers as strings or numbers, enums as
integers)."""

from __future__ import annotations

import json
import zlib
from enum import Enum

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from service.common.errors import PayloadTooLarge, ServiceError


class NotOtlp(ServiceError):
    status, code, title = 400, "invalid_otlp", "The body is not an OTLP metrics export"


class UnsupportedOtlpMedia(ServiceError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class Encoding(Enum):
    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"


def encoding_of(content_type: str | None) -> Encoding:
    media = (content_type or "").split(";")[0].strip().lower()
    for encoding in Encoding:
        if media == encoding.value:
            return encoding
    raise UnsupportedOtlpMedia(
        f"Content-Type '{media or 'none'}' is not OTLP/HTTP: send application/x-protobuf "
        "or application/json"
    )


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """The body as sent before compression: gzip (exporters compress by default) or none. A
    decompressed body over `max_bytes` is refused, so a small compressed body cannot expand
    without bound."""
    coding = (content_encoding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding != "gzip":
        raise UnsupportedOtlpMedia(
            f"Content-Encoding '{coding}' is not supported: send gzip or no encoding"
        )
    inflater = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer
    try:
        plain = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise NotOtlp(f"the body is not valid gzip ({exc})") from exc
    if len(plain) > max_bytes:
        raise PayloadTooLarge(
            f"the decompressed body is over {max_bytes} bytes; export less at once"
        )
    if not inflater.eof:
        raise NotOtlp("the gzip body is truncated")
    return plain


def decode_export(body: bytes, encoding: Encoding) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    if encoding is Encoding.PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise NotOtlp(f"the body is not an OTLP protobuf message ({exc})") from exc
        if len(UnknownFieldSet(request)) and not request.resource_metrics:
            # Bytes that happen to parse, but as nothing an export holds.
            raise NotOtlp("the body is not an ExportMetricsServiceRequest")
        return request
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise NotOtlp(f"the body is not JSON ({exc})") from exc
    if not isinstance(document, dict) or (
        document and not {"resourceMetrics", "resource_metrics"} & document.keys()
    ):
        raise NotOtlp('the body is not an OTLP/JSON export: {"resourceMetrics": [...]}')
    try:
        # Receivers ignore fields they do not know (newer senders may add some).
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise NotOtlp(f"the body is not an OTLP/JSON export ({exc})") from exc
    return request


def encode_response(rejected: int, message: str, encoding: Encoding) -> bytes:
    response = ExportMetricsServiceResponse()
    if rejected:
        response.partial_success.rejected_data_points = rejected
        response.partial_success.error_message = message
    if encoding is Encoding.PROTOBUF:
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode()
