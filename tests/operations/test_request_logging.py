"""Request ids and access logs: X-Request-ID taken or generated, echoed, bound into every log
line of the request; one JSON access line per request; no API key or Authorization in logs."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client import REGISTRY

from service.app import create_app
from tests.conftest import Keys, make_settings
from tests.support.in_loop import in_loop_client

Message = dict[str, Any]


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Where `logged_client` apps write their logs; structlog's process-wide configuration
    (which every create_app sets) is restored afterwards."""
    saved = structlog.get_config()
    try:
        yield io.StringIO()
    finally:
        structlog.configure(**saved)


@contextlib.asynccontextmanager
async def logged_client(database_url: str, output: io.StringIO) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app logging JSON at INFO into `output`. Not a fixture: the app's
    lifespan must be entered and left in the same task."""
    app = create_app(make_settings(database_url, json_logs=True, log_level="INFO"))
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=output))
    async with in_loop_client(app) as client:
        yield client


def log_lines(output: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.getvalue().splitlines() if line.startswith("{")]


def access_lines(output: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in log_lines(output) if line.get("event") == "request"]


async def test_request_id_is_taken_echoed_and_logged(
    database_url: str, log_output: io.StringIO, keys: Keys
) -> None:
    async with logged_client(database_url, log_output) as client:
        response = await client.get(
            "/v1/tenants/acme", headers={**keys.admin, "X-Request-ID": "req-42"}
        )
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "req-42"
    [line] = access_lines(log_output)
    assert line["request_id"] == "req-42"
    assert line["method"] == "GET"
    assert line["route"] == "/v1/tenants/{tenant_id}"  # the template, not the raw path
    assert line["status"] == 404
    assert isinstance(line["duration_ms"], float | int)
    assert line["level"] == "info"


async def test_request_id_is_generated_when_missing_or_unusable(
    database_url: str, log_output: io.StringIO
) -> None:
    async with logged_client(database_url, log_output) as client:
        first = await client.get("/healthz")
        second = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert ids[0] != ids[1]
    assert [line["request_id"] for line in access_lines(log_output)] == ids


async def test_every_request_gets_one_access_line_even_unrouted_ones(
    database_url: str, log_output: io.StringIO
) -> None:
    async with logged_client(database_url, log_output) as client:
        await client.get("/healthz")
        await client.get("/no/such/path")
        await client.delete("/healthz")
    lines = access_lines(log_output)
    assert [(line["route"], line["status"]) for line in lines] == [
        ("/healthz", 200),
        ("unmatched", 404),
        ("unmatched", 405),  # the router refuses the method before naming a route
    ]


async def test_logs_of_a_request_carry_its_request_id(
    database_url: str, log_output: io.StringIO
) -> None:
    """Everything logged while a request runs (here the 503 warning) has the request id."""
    async with logged_client("postgresql://nobody@127.0.0.1:1/nothing", log_output) as client:
        response = await client.get(
            "/v1/tenants", headers={"Authorization": "Bearer mk_a_b", "X-Request-ID": "r-503"}
        )
    assert response.status_code == 503
    warnings = [line for line in log_lines(log_output) if line["event"] == "database_unavailable"]
    assert warnings
    assert all(line["request_id"] == "r-503" for line in warnings)


async def test_api_keys_and_authorization_never_reach_the_logs(
    database_url: str, log_output: io.StringIO, keys: Keys
) -> None:
    async with logged_client(database_url, log_output) as client:
        created = await client.post(
            "/v1/api-keys", json={"name": "secretive", "scopes": ["read"]}, headers=keys.admin
        )
        assert created.status_code == 201
        new_key = created.json()["key"]
        await client.get("/v1/tenants", headers={"Authorization": f"Bearer {new_key}"})
        await client.get("/v1/tenants", headers={"Authorization": "Bearer mk_bogus_token"})
    admin_key = keys.admin["Authorization"].removeprefix("Bearer ")
    text = log_output.getvalue()
    assert len(access_lines(log_output)) == 3
    for secret in (new_key, admin_key, "mk_bogus_token"):
        assert secret not in text
    assert "authorization" not in text.lower()
    assert "bearer" not in text.lower()


def _requests_counted(route: str, status: str) -> float:
    labels = {"method": "POST", "route": route, "status": status}
    return REGISTRY.get_sample_value("metering_http_requests_total", labels) or 0.0


async def test_a_client_leaving_mid_body_is_a_disconnect_not_a_server_error(
    database_url: str, log_output: io.StringIO, keys: Keys
) -> None:
    """The body stops early (the ASGI server reports http.disconnect): logged as
    client_disconnected and counted with status 499, never as a 5xx."""
    app = create_app(make_settings(database_url, json_logs=True, log_level="INFO"))
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=log_output))
    route = "/v1/tenants"
    before = {status: _requests_counted(route, status) for status in ("499", "500")}
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"id": "acme", "na', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": route,
        "raw_path": route.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", b"100"),
            (b"authorization", keys.admin["Authorization"].encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    async with app.lifespan():
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert _requests_counted(route, "499") == before["499"] + 1
    assert _requests_counted(route, "500") == before["500"]
    events = [line["event"] for line in log_lines(log_output)]
    assert "client_disconnected" in events, events
    assert "request" not in events
    assert "unhandled_error" not in events
    [line] = [line for line in log_lines(log_output) if line["event"] == "client_disconnected"]
    assert (line["route"], line["status"]) == (route, 499)
