"""Complete the generated OpenAPI document so that it states what the API really does.

Litestar's generator leaves three gaps that the contract tests (schemathesis) catch:

- errors: it documents a 400 with its own ValidationException body on operations that take
  input, and nothing else; this API answers problem+json (service.common.errors) with 422 for
  invalid input (on every operation: unknown query parameters are refused), 401/403 from the
  scope guards, 404, 409, 413, 429 and 503;
- public operations: the document-wide bearer requirement also lands on the probes and
  /metrics, which need no key;
- closed request bodies: msgspec structs with `forbid_unknown_fields=True` reject unknown
  fields, but their schemas do not say `additionalProperties: false`.

Rather than repeat this on every handler of every domain, the document is completed here from
what each route is: guarded or public, with path parameters, with a body, reading or writing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)
from litestar.routes import HTTPRoute

from service.common.errors import PROBLEM_JSON

# Key of a route handler's `opt`: problem statuses to document beyond those its shape implies.
PROBLEM_STATUSES = "problem_statuses"
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PROBLEM_REF = Reference(ref="#/components/schemas/Problem")
_RETRY_AFTER = {
    "Retry-After": OpenAPIHeader(
        description="Seconds to wait before retrying", schema=Schema(type=OpenAPIType.INTEGER)
    )
}

FIELD_ERROR_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["field", "message"],
    properties={
        "field": Schema(type=OpenAPIType.STRING),
        "message": Schema(type=OpenAPIType.STRING),
        "index": Schema(type=OpenAPIType.INTEGER),
    },
)
PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details; `code` is stable",
    required=["type", "title", "status", "detail", "code"],
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "code": Schema(type=OpenAPIType.STRING),
        "errors": Schema(
            type=OpenAPIType.ARRAY, items=Reference(ref="#/components/schemas/FieldError")
        ),
    },
)

_DESCRIPTIONS = {
    "400": "The body is not in the format the operation takes (`invalid_otlp`)",
    "401": "Missing or invalid API key (`unauthorized`)",
    "403": "The API key lacks the scope or is bound to another tenant (`forbidden`)",
    "404": "Not found (`not_found`)",
    "409": "Conflicts with the current state (`conflict`)",
    "413": "Request body too large (`payload_too_large`)",
    "415": "Content-Type or Content-Encoding not supported (`unsupported_media_type`)",
    "422": "Invalid input (`validation_error`), naming the fields in `errors`",
    "429": "Rate limit of the API key exceeded (`rate_limited`)",
    "503": "Database unavailable or overloaded (`database_unavailable`, `overloaded`)",
}


def complete_openapi(app: Litestar) -> None:
    """Complete the app's OpenAPI document (built here, once, at startup)."""
    openapi = app.openapi_schema
    components = openapi.components
    if not isinstance(components, Components):  # pragma: no cover - Litestar merges to one
        return
    schemas = components.schemas if components.schemas is not None else {}
    schemas.setdefault("Problem", PROBLEM_SCHEMA)
    schemas.setdefault("FieldError", FIELD_ERROR_SCHEMA)
    components.schemas = dict(sorted(schemas.items()))
    closed: set[str] = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path_item = (openapi.paths or {}).get(route.path_format or "/")
        if path_item is None:
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            guarded = bool(handler.resolve_guards())
            # Statuses a route answers that its shape does not tell (404 for a tenant named
            # in the query that does not exist): `@get(..., opt={PROBLEM_STATUSES: ["404"]})`.
            extra = [str(status) for status in handler.opt.get(PROBLEM_STATUSES, ())]
            for method in handler.http_methods:
                operation = getattr(path_item, method.lower(), None)
                if isinstance(operation, Operation):
                    _document_errors(operation, method, guarded, extra)
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is not None:
                closed |= _closed_struct_names(data.annotation)
    for schema in schemas.values():
        if isinstance(schema, Schema) and schema.title in closed:
            schema.additional_properties = False


def _problem(status: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=_DESCRIPTIONS[status],
        content={PROBLEM_JSON: OpenAPIMediaType(schema=_PROBLEM_REF)},
        headers=dict(_RETRY_AFTER) if status in ("429", "503") else None,
    )


def _is_litestar_validation_400(response: OpenAPIResponse | Reference) -> bool:
    if not isinstance(response, OpenAPIResponse) or not response.content:
        return False
    return any(
        isinstance(media.schema, Schema) and media.schema.description == "Validation Exception"
        for media in response.content.values()
    )


def _document_errors(operation: Operation, method: str, guarded: bool, extra: list[str]) -> None:
    responses = operation.responses if operation.responses is not None else {}
    operation.responses = responses
    if "400" in responses and _is_litestar_validation_400(responses["400"]):
        del responses["400"]  # this API never answers 400: see errors._http_error
    parameters = operation.parameters or []
    # Every operation refuses query parameters it does not declare (query_parameters.py).
    statuses: list[str] = ["422", *extra]
    if guarded:
        statuses += ["401", "403", "429", "503"]
    else:
        operation.security = []  # public: overrides the document-wide bearer requirement
    if any(getattr(p, "param_in", None) == "path" for p in parameters):
        statuses.append("404")
    if method in _WRITES:
        statuses.append("409")
    if operation.request_body is not None:
        statuses.append("413")
    for status in sorted(set(statuses)):
        responses.setdefault(status, _problem(status))


def _closed_struct_names(annotation: Any) -> set[str]:
    """Names of the msgspec structs reachable from a request body type that forbid unknown
    fields (Litestar titles their component schemas with the class name)."""
    try:
        info = msgspec.inspect.type_info(annotation)
    except (TypeError, ValueError):  # not a msgspec-describable type: nothing to say
        return set()
    return {
        t.cls.__name__
        for t in _walk(info, set())
        if isinstance(t, msgspec.inspect.StructType) and t.forbid_unknown_fields
    }


def _walk(info: msgspec.inspect.Type, seen: set[int]) -> Iterator[msgspec.inspect.Type]:
    if id(info) in seen:
        return
    seen.add(id(info))
    yield info
    if isinstance(info, msgspec.inspect.StructType):
        children: list[Any] = [field.type for field in info.fields]
    else:
        children = []
        for name in ("type", "item_type", "key_type", "value_type"):
            if (child := getattr(info, name, None)) is not None:
                children.append(child)
        for name in ("types", "item_types"):
            children.extend(getattr(info, name, ()) or ())
    for child in children:
        if isinstance(child, msgspec.inspect.Type):
            yield from _walk(child, seen)
