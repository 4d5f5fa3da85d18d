"""Per request: a request id, one access log line, and the HTTP request metrics.

This wraps the whole application rather than sitting in Litestar's middleware stack, which is
only entered once a route matched: requests for unknown paths (404) and methods (405) must be
counted and logged too. Nothing from the request headers is logged except the request id, so
API keys and Authorization headers never reach the logs."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog
from litestar.enums import ScopeType

from service.common.metrics import HTTP_LATENCY, HTTP_REQUESTS

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, HTTPScope, Message, Receive, ReceiveMessage, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
# Routes are the path templates ("/v1/tenants/{tenant_id}"), never raw paths, so the number
# of label values is bounded by the number of routes; everything unrouted shares one value.
UNMATCHED_ROUTE = "unmatched"
# The status recorded (metrics and log, never sent) for a request whose client disconnected
# before it was answered: nginx's "client closed request", outside the 5xx of server errors.
CLIENT_CLOSED_REQUEST = 499
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A caller's id is echoed and logged only if it is short and plain; otherwise we make one.
_ACCEPTABLE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

access_log = structlog.get_logger("service.access")


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _ACCEPTABLE_REQUEST_ID.match(text):
                return text
            break
    return uuid.uuid4().hex


class RequestObservability:
    """ASGI wrapper: binds `request_id` into structlog's context for everything logged while
    the request runs, echoes it in X-Request-ID, then counts, times and logs the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())
        status = 500  # what the server answers if the app fails before starting a response
        responding = False
        disconnected = False

        async def receive_watching_disconnect() -> ReceiveMessage:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect" and not responding:
                disconnected = True
            return message

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, responding
            if message["type"] == "http.response.start":
                responding = True
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive_watching_disconnect, send_with_request_id)
            finally:
                # A client that left before the request was answered (mid-body, typically):
                # whatever the app made of the missing body, no server error happened.
                outcome = CLIENT_CLOSED_REQUEST if disconnected else status
                self._record(scope, outcome, time.perf_counter() - started)

    @staticmethod
    def _record(scope: HTTPScope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        route = scope.get("path_template") or UNMATCHED_ROUTE
        HTTP_REQUESTS.labels(method, route, str(status)).inc()
        HTTP_LATENCY.labels(method, route).observe(seconds)
        fields: dict[str, Any] = {
            "method": method,
            "route": route,
            "path": scope["path"],
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        principal = (scope.get("state") or {}).get("principal")
        if principal is not None:
            fields["api_key_id"] = principal.key_id  # the key's id, never the key
        if status == CLIENT_CLOSED_REQUEST:
            access_log.info("client_disconnected", **fields)
        else:
            access_log.info("request", **fields)


def observe_requests(app: Litestar) -> None:
    """Wrap the app's ASGI entry point (inside Litestar.__call__, outside its router)."""
    app.asgi_handler = RequestObservability(app.asgi_handler)
