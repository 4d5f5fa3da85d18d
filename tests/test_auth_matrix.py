"""Route-by-scope matrix: every route answers 401 without a key (or with a bad one), 403 with a
key lacking the scope or bound to another tenant, and gets past auth with the right key.

Every route of the app must be listed in ROUTES: a new route fails this test until it is."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys

ALL_SCOPES = ("admin", "ingest", "read", "billing")
PUBLIC = {"/healthz", "/readyz", "/metrics"}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {tenant} is replaced by the tenant the call is about
    scopes: frozenset[str]  # scopes admitted besides admin (admin admits everything)
    tenant_scoped: bool = False  # True: a key bound to another tenant must get 403
    body: Any = None
    query: dict[str, Any] = field(default_factory=dict)


MATRIX_EVENT = {
    "tenant_id": "acme",
    "event_name": "tokens",
    "idempotency_key": "matrix-1",
    "timestamp": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
    "value": "1",
}


def route(
    method: str,
    path: str,
    *scopes: str,
    tenant_scoped: bool = False,
    body: Any = None,
    query: dict[str, Any] | None = None,
) -> Route:
    return Route(method, path, frozenset(scopes), tenant_scoped, body, query or {})


ROUTES: list[Route] = [
    route("POST", "/v1/events", "ingest", tenant_scoped=True, body=MATRIX_EVENT),
    route(
        "POST", "/v1/events/batch", "ingest", tenant_scoped=True, body={"events": [MATRIX_EVENT]}
    ),
    route("GET", "/v1/events", "read", tenant_scoped=True, query={"tenant_id": "{tenant}"}),
    route(
        "POST", "/v1/events/1/cancel", "ingest", tenant_scoped=True, query={"tenant_id": "{tenant}"}
    ),
    # An empty OTLP/JSON export. Another tenant's points are refused per point in the OTLP
    # answer (partial_success), not with a 403: not tenant-scoped here.
    route("POST", "/otlp/v1/metrics", "ingest", body={"resourceMetrics": []}),
    route(
        "GET",
        "/v1/usage",
        "read",
        "billing",
        tenant_scoped=True,
        query={
            "tenant_id": "{tenant}",
            "from": "2026-11-01T00:00:00Z",
            "to": "2026-11-02T00:00:00Z",
        },
    ),
    route(
        "GET",
        "/v1/usage/summary",
        "read",
        "billing",
        tenant_scoped=True,
        query={
            "tenant_id": "{tenant}",
            "from": "2026-11-01T00:00:00Z",
            "to": "2026-11-02T00:00:00Z",
        },
    ),
    route(
        "GET",
        "/v1/costs",
        "read",
        "billing",
        tenant_scoped=True,
        query={
            "tenant_id": "{tenant}",
            "from": "2026-11-01T00:00:00Z",
            "to": "2026-11-02T00:00:00Z",
        },
    ),
    route(
        "GET",
        "/v1/reports/llm",
        "read",
        "billing",
        tenant_scoped=True,
        query={
            "tenant_id": "{tenant}",
            "from": "2026-11-01T00:00:00Z",
            "to": "2026-11-02T00:00:00Z",
        },
    ),
    route("POST", "/v1/tenants", body={"id": "newco", "name": "New Co"}),
    route("GET", "/v1/tenants"),
    route("GET", "/v1/tenants/{tenant}"),
    route("PATCH", "/v1/tenants/{tenant}", body={"name": "Renamed"}),
    route("POST", "/v1/api-keys", body={"name": "k", "scopes": ["read"]}),
    route("GET", "/v1/api-keys"),
    route("DELETE", "/v1/api-keys/00000000-0000-0000-0000-000000000000"),
    route(
        "GET",
        "/v1/tenants/{tenant}/invoices/preview",
        "billing",
        tenant_scoped=True,
        query={"period": "2026-10"},
    ),
    route(
        "POST",
        "/v1/tenants/{tenant}/invoices",
        "billing",
        tenant_scoped=True,
        body={"period": "2026-10"},
    ),
    route(
        "POST",
        "/v1/tenants/{tenant}/charges",
        body={
            "name": "Platform fee",
            "unit_amount": "100",
            "effective_from": "2026-11-01T00:00:00Z",
        },
    ),
    route("GET", "/v1/tenants/{tenant}/charges", "billing", tenant_scoped=True),
    route(
        "POST",
        "/v1/tenants/{tenant}/charges/00000000-0000-0000-0000-000000000000/end",
        body={"effective_to": "2026-12-01T00:00:00Z"},
    ),
    route(
        "POST",
        "/v1/tenants/{tenant}/commitments",
        body={"amount": "500", "effective_from": "2026-11-01T00:00:00Z"},
    ),
    route("GET", "/v1/tenants/{tenant}/commitments", "billing", tenant_scoped=True),
    route(
        "POST",
        "/v1/tenants/{tenant}/commitments/00000000-0000-0000-0000-000000000000/end",
        body={"effective_to": "2026-12-01T00:00:00Z"},
    ),
    route("GET", "/v1/invoices", "billing", tenant_scoped=True, query={"tenant_id": "{tenant}"}),
    route("GET", "/v1/invoices/00000000-0000-0000-0000-000000000000", "billing"),
    route("POST", "/v1/invoices/00000000-0000-0000-0000-000000000000/void", "billing"),
    route(
        "POST",
        "/v1/meters",
        body={"event_name": "calls", "name": "Calls", "aggregation": "count", "currency": "USD"},
    ),
    route("GET", "/v1/meters", "ingest", "read", "billing"),
    route("GET", "/v1/meters/tokens", "ingest", "read", "billing"),
    route("PATCH", "/v1/meters/tokens", body={"name": "Renamed"}),
    route("POST", "/v1/meters/tokens/archive"),
    route("POST", "/v1/meters/presets/llm", body={}),
    route("POST", "/v1/prices/import/llm", body={"models": ["gpt-4o"]}),
    route(
        "POST",
        "/v1/prices",
        body={"meter": "tokens", "unit_amount": "1.00", "match": {"model": "gpt-4o"}},
    ),
    route("GET", "/v1/prices", "billing", query={"meter": "tokens"}),
    route("GET", "/v1/prices/00000000-0000-0000-0000-000000000000", "billing"),
    route(
        "POST",
        "/v1/prices/00000000-0000-0000-0000-000000000000/end",
        body={"effective_to": "2026-01-01T00:00:00Z"},
    ),
    route(
        "POST",
        "/v1/webhook-endpoints",
        body={"url": "https://hooks.example.com/in", "event_types": ["invoice.finalized"]},
    ),
    route("GET", "/v1/webhook-endpoints"),
    route(
        "POST",
        "/v1/budgets",
        "billing",
        tenant_scoped=True,
        body={
            "tenant_id": "acme",
            "name": "b",
            "period": "day",
            "limit": {"meter": "tokens", "quantity": "10"},
        },
    ),
    route("GET", "/v1/budgets", "billing", tenant_scoped=True, query={"tenant_id": "{tenant}"}),
    route("GET", "/v1/budgets/00000000-0000-0000-0000-000000000000", "billing"),
    route("DELETE", "/v1/budgets/00000000-0000-0000-0000-000000000000", "billing"),
    route(
        "GET",
        "/v1/budgets/check",
        "ingest",
        "read",
        tenant_scoped=True,
        query={"tenant_id": "{tenant}", "api_key_id": "k1"},
    ),
    route("GET", "/v1/webhook-endpoints/00000000-0000-0000-0000-000000000000"),
    route("DELETE", "/v1/webhook-endpoints/00000000-0000-0000-0000-000000000000"),
    route("GET", "/v1/webhook-endpoints/00000000-0000-0000-0000-000000000000/deliveries"),
    route(
        "POST",
        "/v1/webhook-endpoints/00000000-0000-0000-0000-000000000000/deliveries/00000000-0000-0000-0000-000000000000/retry",
    ),
]


# The probes and /metrics take no key; they are listed for the checks that are not about auth.
PUBLIC_ROUTES: list[Route] = [route("GET", path) for path in sorted(PUBLIC)]


def _pattern(app_path: str) -> re.Pattern[str]:
    """'/v1/tenants/{tenant_id:str}' → a regex matching the concrete paths listed in ROUTES."""
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", app_path) + "/?$")


def test_every_route_is_in_the_matrix(app: Litestar) -> None:
    listed = [(r.method, r.path.replace("{tenant}", "acme")) for r in ROUTES]
    missing = []
    for app_route in app.routes:
        if app_route.path in PUBLIC or app_route.path.startswith("/docs"):
            continue
        pattern = _pattern(app_route.path)
        for method in getattr(app_route, "methods", set()):
            if method in {"OPTIONS", "HEAD"}:
                continue
            if not any(m == method and pattern.match(p) for m, p in listed):
                missing.append(f"{method} {app_route.path}")
    assert not missing, f"routes missing from the auth matrix: {missing}"


async def _call(
    client: AsyncTestClient[Litestar], r: Route, headers: dict[str, str], tenant: str
) -> int:
    path = r.path.replace("{tenant}", tenant)
    query = {
        k: (v.replace("{tenant}", tenant) if isinstance(v, str) else v) for k, v in r.query.items()
    }
    response = await client.request(r.method, path, json=r.body, params=query, headers=headers)
    assert response.status_code < 500, (r, response.text)
    return response.status_code


@pytest.fixture
async def tenants(client: AsyncTestClient[Litestar], keys: Keys) -> None:
    for tenant_id in ("acme", "other"):
        response = await client.post(
            "/v1/tenants", json={"id": tenant_id, "name": tenant_id}, headers=keys.admin
        )
        assert response.status_code == 201
    meter = {"event_name": "tokens", "name": "Tokens", "aggregation": "sum", "currency": "USD"}
    response = await client.post("/v1/meters", json=meter, headers=keys.admin)
    assert response.status_code == 201
    price = {"meter": "tokens", "unit_amount": "2.50", "effective_from": "2026-01-01T00:00:00Z"}
    response = await client.post("/v1/prices", json=price, headers=keys.admin)
    assert response.status_code == 201


@pytest.mark.parametrize("r", ROUTES, ids=lambda r: f"{r.method} {r.path}")
async def test_route_scope_matrix(
    client: AsyncTestClient[Litestar], keys: Keys, tenants: None, r: Route
) -> None:
    assert await _call(client, r, {}, "acme") == 401
    bad = {"Authorization": "Bearer mk_nothing_here"}
    assert await _call(client, r, bad, "acme") == 401
    assert await _call(client, r, {"Authorization": "Basic abc"}, "acme") == 401
    for scope in ALL_SCOPES:
        headers = await keys.make(scope)
        status = await _call(client, r, headers, "acme")
        if scope == "admin" or scope in r.scopes:
            assert status not in (401, 403), (scope, status)
        else:
            assert status == 403, (scope, status)
        if scope != "admin" and scope in r.scopes:
            bound_here = await keys.make(scope, tenant_id="acme")
            assert await _call(client, r, bound_here, "acme") not in (401, 403)
            if r.tenant_scoped:
                bound_elsewhere = await keys.make(scope, tenant_id="other")
                assert await _call(client, r, bound_elsewhere, "acme") == 403


@pytest.mark.parametrize("r", ROUTES + PUBLIC_ROUTES, ids=lambda r: f"{r.method} {r.path}")
async def test_unknown_query_parameters_are_refused_on_every_route(
    client: AsyncTestClient[Litestar], keys: Keys, tenants: None, r: Route
) -> None:
    """Never silently ignored (`groupby` for `group_by` would answer ungrouped totals). With
    test_every_route_is_in_the_matrix, a new route is covered as soon as it exists."""
    path = r.path.replace("{tenant}", "acme")
    query = {
        k: (v.replace("{tenant}", "acme") if isinstance(v, str) else v) for k, v in r.query.items()
    }
    response = await client.request(
        r.method, path, json=r.body, params={**query, "groupby": "model"}, headers=keys.admin
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert [e["field"] for e in problem["errors"]] == ["groupby"]
    assert "unknown query parameter" in problem["detail"]
    # The parameters the route declares are not refused.
    declared = await client.request(r.method, path, json=r.body, params=query, headers=keys.admin)
    assert "unknown query parameter" not in declared.text, declared.text


async def test_revoked_key_is_refused(client: AsyncTestClient[Litestar], keys: Keys) -> None:
    created = await client.post(
        "/v1/api-keys", json={"name": "temp", "scopes": ["admin"]}, headers=keys.admin
    )
    assert created.status_code == 201
    temp = {"Authorization": f"Bearer {created.json()['key']}"}
    assert (await client.get("/v1/tenants", headers=temp)).status_code == 200
    revoked = await client.delete(f"/v1/api-keys/{created.json()['id']}", headers=keys.admin)
    assert revoked.status_code == 204
    assert (await client.get("/v1/tenants", headers=temp)).status_code == 401
