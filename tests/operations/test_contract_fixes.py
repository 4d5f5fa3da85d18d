"""What API fuzzing found, pinned down: the OpenAPI document states the real error answers,
public operations and closed bodies; OPTIONS lists every method; values PostgreSQL cannot store
are a 422, not a 500."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Litestar, post
from litestar.testing import AsyncTestClient

from service.common.errors import EXCEPTION_HANDLERS
from service.openapi import render_openapi
from tests.conftest import Keys

Client = AsyncTestClient[Litestar]


def _spec() -> dict[str, Any]:
    import json

    return json.loads(render_openapi())  # type: ignore[no-any-return]


def test_error_answers_are_documented_as_problem_json() -> None:
    spec = _spec()
    patch = spec["paths"]["/v1/tenants/{tenant_id}"]["patch"]["responses"]
    assert "400" not in patch  # Litestar's own 400 body: this API answers 422 instead
    for status in ("401", "403", "404", "409", "413", "422", "429", "503"):
        assert patch[status]["content"]["application/problem+json"]["schema"] == {
            "$ref": "#/components/schemas/Problem"
        }, status
    assert "Retry-After" in patch["503"]["headers"]
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}


def test_public_operations_need_no_key_and_the_rest_do() -> None:
    spec = _spec()
    assert spec["security"] == [{"BearerKey": []}]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert spec["paths"][path]["get"]["security"] == [], path
        assert "401" not in spec["paths"][path]["get"]["responses"]
    listing = spec["paths"]["/v1/tenants"]["get"]
    assert "security" not in listing  # inherits the bearer requirement
    assert "401" in listing["responses"]


def test_bodies_that_refuse_unknown_fields_say_so() -> None:
    schemas = _spec()["components"]["schemas"]
    assert schemas["TenantCreate"]["additionalProperties"] is False
    assert schemas["TenantUpdate"]["additionalProperties"] is False
    assert "additionalProperties" not in schemas["TenantOut"]  # answers stay open


async def test_options_lists_every_method_of_the_path(client: Client, keys: Keys) -> None:
    response = await client.options("/v1/tenants", headers=keys.admin)
    assert response.status_code == 204
    assert response.headers["allow"] == "GET, OPTIONS, POST"


async def test_text_postgres_cannot_store_is_422_not_500(client: Client, keys: Keys) -> None:
    response = await client.post(
        "/v1/tenants", json={"id": "nul", "name": "bad\u0000name"}, headers=keys.admin
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_dates_out_of_range_are_422_not_500() -> None:
    """Fuzzing sent effective_to "0001-01-01T00:00:00+01:00", which has no UTC equivalent."""

    @post("/instant", sync_to_thread=False)
    def instant(data: dict[str, datetime]) -> str:
        return data["at"].astimezone(UTC).isoformat()

    app = Litestar([instant], exception_handlers=EXCEPTION_HANDLERS)
    async with AsyncTestClient(app=app) as client:
        response = await client.post("/instant", json={"at": "0001-01-01T00:00:00+01:00"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_a_bare_number_is_not_a_time_in_queries(client: Client, keys: Keys) -> None:
    """Fuzzing sent `to=2020`, which Litestar would read as a Unix timestamp (1970)."""
    response = await client.get(
        "/v1/events", params={"tenant_id": "acme", "to": "2020"}, headers=keys.admin
    )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["to"]
