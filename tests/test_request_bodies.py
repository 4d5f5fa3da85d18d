"""Request values PostgreSQL cannot store, and values of the wrong JSON type, are refused on
every route before the database, with a 422 naming the field in our own words."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys
from tests.support.problems import assert_problem

Client = AsyncTestClient[Litestar]
PRICE = "00000000-0000-0000-0000-000000000000"
NUL = "\x00"

NUL_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    # method, path, body, field
    ("POST", "/v1/tenants", {"id": "newco", "name": f"New{NUL}Co"}, "name"),
    ("PATCH", "/v1/tenants/acme", {"name": f"Acme{NUL}"}, "name"),
    ("POST", "/v1/api-keys", {"name": f"k{NUL}", "scopes": ["read"]}, "name"),
    (
        "POST",
        "/v1/meters",
        {"event_name": "calls", "name": f"C{NUL}", "aggregation": "count", "currency": "USD"},
        "name",
    ),
    (
        "POST",
        "/v1/meters",
        {
            "event_name": "calls",
            "name": "Calls",
            "aggregation": "count",
            "currency": "USD",
            "metadata": {"owner": {f"te{NUL}am": "infra"}},
        },
        "metadata.owner",
    ),
    ("PATCH", "/v1/meters/tokens", {"description": f"d{NUL}"}, "description"),
    ("PATCH", "/v1/meters/tokens", {"unit": f"tok{NUL}"}, "unit"),
    (
        "POST",
        "/v1/prices",
        {"meter": "tokens", "unit_amount": "1", "match": {"model": f"gpt{NUL}4o"}},
        "match.model",
    ),
    ("POST", "/v1/tenants/acme/invoices", {"period": f"2026-10{NUL}"}, "period"),
]


@pytest.fixture
async def world(client: Client, keys: Keys) -> None:
    assert (
        await client.post("/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=keys.admin)
    ).status_code == 201
    meter = {"event_name": "tokens", "name": "Tokens", "aggregation": "sum", "currency": "USD"}
    assert (await client.post("/v1/meters", json=meter, headers=keys.admin)).status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "body", "field"), NUL_CASES, ids=[f"{c[0]} {c[1]} {c[3]}" for c in NUL_CASES]
)
async def test_nul_characters_are_refused_naming_the_field(
    client: Client,
    keys: Keys,
    world: None,
    method: str,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    response = await client.request(method, path, json=body, headers=keys.admin)
    assert_problem(response, 422, "validation_error", field)
    detail = response.json()["detail"]
    if field != "period":  # its pattern (YYYY-MM) refuses the value first
        assert "NUL" in detail
    for driver_words in ("UTF8", "0x00", "invalid byte sequence"):
        assert driver_words not in detail


async def test_nul_characters_in_query_values_are_refused(
    client: Client, keys: Keys, world: None
) -> None:
    response = await client.get("/v1/prices", params={"meter": f"tok{NUL}ens"}, headers=keys.admin)
    assert_problem(response, 422, "validation_error", "meter")
    assert "UTF8" not in response.text


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/prices",
            {"meter": "tokens", "unit_amount": "1", "effective_from": 1767225600},
            "effective_from",
        ),
        (
            "/v1/prices",
            {"meter": "tokens", "unit_amount": "1", "effective_to": 1767225600},
            "effective_to",
        ),
        (f"/v1/prices/{PRICE}/end", {"effective_to": 1767225600}, "effective_to"),
    ],
)
async def test_instants_are_rfc3339_strings_never_unix_numbers(
    client: Client, keys: Keys, world: None, path: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post(path, json=body, headers=keys.admin)
    assert_problem(response, 422, "validation_error", field)


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED_CURSORS = {
    "nested 3000 deep": _cursor(b"[" * 3000 + b"]" * 3000),
    "NUL in a value": _cursor(b'["ac\\u0000me"]'),
    "huge number": _cursor(b"[" + b"9" * 30 + b"]"),
    "object": _cursor(b'[{"a": 1}]'),
    "not base64": "%%%",
}
LIST_ROUTES = [
    ("/v1/tenants", {}),
    ("/v1/api-keys", {}),
    ("/v1/meters", {}),
    ("/v1/prices", {}),
    ("/v1/invoices", {"tenant_id": "acme"}),
    ("/v1/events", {"tenant_id": "acme"}),
]


@pytest.mark.parametrize("name", sorted(FORGED_CURSORS))
@pytest.mark.parametrize(("path", "query"), LIST_ROUTES, ids=[r[0] for r in LIST_ROUTES])
async def test_forged_cursors_are_refused_naming_cursor(
    client: Client, keys: Keys, world: None, path: str, query: dict[str, str], name: str
) -> None:
    params = {**query, "cursor": FORGED_CURSORS[name]}
    response = await client.get(path, params=params, headers=keys.admin)
    assert_problem(response, 422, "validation_error", "cursor")
