from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys
from tests.support.pagination import walk_pages

Client = AsyncTestClient[Litestar]
ACME = {"id": "acme", "name": "Acme Inc", "currency": "USD", "timezone": "Europe/Berlin"}


async def create_tenant(client: Client, keys: Keys, **fields: Any) -> dict[str, Any]:
    body = {**ACME, **fields}
    response = await client.post("/v1/tenants", json=body, headers=keys.admin)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_create_get_update_tenant(client: Client, keys: Keys) -> None:
    created = await create_tenant(client, keys)
    assert created["status"] == "active"
    assert created["retention_days"] is None
    got = await client.get("/v1/tenants/acme", headers=keys.admin)
    assert got.json()["name"] == "Acme Inc"
    patched = await client.patch(
        "/v1/tenants/acme", json={"status": "suspended", "retention_days": 90}, headers=keys.admin
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] == "suspended"
    assert patched.json()["retention_days"] == 90
    assert patched.json()["timezone"] == "Europe/Berlin"


async def test_duplicate_tenant_is_409(client: Client, keys: Keys) -> None:
    await create_tenant(client, keys)
    again = await client.post("/v1/tenants", json=ACME, headers=keys.admin)
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    assert again.json()["code"] == "conflict"


async def test_bad_fields_are_422_naming_the_field(client: Client, keys: Keys) -> None:
    cases = [
        ({**ACME, "currency": "XYZ"}, "currency"),
        ({**ACME, "timezone": "Mars/Olympus"}, "timezone"),
        ({**ACME, "id": "Not A Slug"}, "id"),
        ({**ACME, "retention_days": 3}, "retention_days"),
        ({**ACME, "status": "deleted"}, "status"),
        ({**ACME, "surprise": 1}, "surprise"),
        ({"name": "x"}, "id"),
    ]
    for body, field in cases:
        response = await client.post("/v1/tenants", json=body, headers=keys.admin)
        assert response.status_code == 422, (body, response.text)
        problem = response.json()
        assert problem["code"] == "validation_error"
        assert field in problem["detail"] or any(field in e["field"] for e in problem["errors"]), (
            body,
            problem,
        )


async def test_malformed_json_is_422_not_500(client: Client, keys: Keys) -> None:
    response = await client.post(
        "/v1/tenants",
        content=b"{not json",
        headers={**keys.admin, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_unknown_tenant_is_404(client: Client, keys: Keys) -> None:
    response = await client.get("/v1/tenants/nobody", headers=keys.admin)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_tenant_list_is_paginated(client: Client, keys: Keys) -> None:
    for i in range(5):
        await create_tenant(client, keys, id=f"t{i}", name=f"T{i}")
    seen = await walk_pages(client, "/v1/tenants", keys.admin, "id")
    assert seen == ["t0", "t1", "t2", "t3", "t4"]
    bad = await client.get("/v1/tenants", params={"cursor": "garbage!"}, headers=keys.admin)
    assert bad.status_code == 422
    too_many = await client.get("/v1/tenants", params={"limit": 5000}, headers=keys.admin)
    assert too_many.status_code == 422


async def test_oversized_body_is_413(client: Client, keys: Keys, app: Litestar) -> None:
    limit = app.state.settings.max_body_bytes
    body = b'{"id": "big", "name": "' + b"x" * (limit + 10) + b'"}'
    response = await client.post(
        "/v1/tenants", content=body, headers={**keys.admin, "content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
