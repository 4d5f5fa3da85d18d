from __future__ import annotations

from typing import Any

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys
from tests.support.pagination import walk_pages
from tests.support.problems import assert_problem

Client = AsyncTestClient[Litestar]
TOKENS = {
    "event_name": "input_tokens",
    "name": "Input tokens",
    "unit": "tokens",
    "aggregation": "sum",
    "currency": "USD",
}


async def create_meter(client: Client, keys: Keys, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/meters", json={**TOKENS, **fields}, headers=keys.admin)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_create_get_and_defaults(client: Client, keys: Keys) -> None:
    created = await create_meter(
        client,
        keys,
        description="Prompt tokens",
        dimensions=["region", "tier"],
        metadata={"owner": "llm-team", "nested": {"a": [1, 2]}},
    )
    assert created["event_name"] == "input_tokens"
    assert created["status"] == "active"
    assert created["has_events"] is False
    assert created["dimensions"] == ["region", "tier"]
    assert created["metadata"] == {"owner": "llm-team", "nested": {"a": [1, 2]}}
    got = await client.get("/v1/meters/input_tokens", headers=keys.admin)
    assert got.status_code == 200
    assert got.json() == created

    minimal = await create_meter(
        client, keys, event_name="api.calls-v2", name="API calls", aggregation="count"
    )
    assert minimal["dimensions"] == []
    assert minimal["metadata"] == {}
    assert minimal["description"] is None


async def test_any_scope_reads_meters_only_admin_writes(client: Client, keys: Keys) -> None:
    await create_meter(client, keys)
    for scope in ("ingest", "read", "billing"):
        headers = await keys.make(scope)
        assert (await client.get("/v1/meters", headers=headers)).status_code == 200
        assert (await client.get("/v1/meters/input_tokens", headers=headers)).status_code == 200
        denied = await client.post(
            "/v1/meters", json={**TOKENS, "event_name": "x"}, headers=headers
        )
        assert_problem(denied, 403, "forbidden")


async def test_duplicate_event_name_is_409_meter_exists(client: Client, keys: Keys) -> None:
    await create_meter(client, keys)
    again = await client.post("/v1/meters", json={**TOKENS, "name": "Other"}, headers=keys.admin)
    assert_problem(again, 409, "meter_exists")


async def test_invalid_meters_are_422_naming_the_field(client: Client, keys: Keys) -> None:
    cases = [
        ({**TOKENS, "aggregation": "avg"}, "aggregation"),
        ({**TOKENS, "currency": "XYZ"}, "currency"),
        ({**TOKENS, "currency": "usd"}, "currency"),
        ({**TOKENS, "event_name": "Input_Tokens"}, "event_name"),
        ({**TOKENS, "event_name": "_tokens"}, "event_name"),
        ({**TOKENS, "event_name": "a" * 65}, "event_name"),
        ({**TOKENS, "event_name": "tokens/in"}, "event_name"),
        ({**TOKENS, "dimensions": ["model"]}, "dimensions"),
        ({**TOKENS, "dimensions": ["tenant_id"]}, "dimensions"),
        ({**TOKENS, "dimensions": ["region", "region"]}, "dimensions"),
        ({**TOKENS, "dimensions": ["Region"]}, "dimensions"),
        ({**TOKENS, "dimensions": ["9lives"]}, "dimensions"),
        ({**TOKENS, "dimensions": [f"d{i}" for i in range(17)]}, "dimensions"),
        ({**TOKENS, "metadata": [1, 2]}, "metadata"),
        ({**TOKENS, "surprise": True}, "surprise"),
        ({k: v for k, v in TOKENS.items() if k != "aggregation"}, "aggregation"),
        ({k: v for k, v in TOKENS.items() if k != "name"}, "name"),
    ]
    for body, field in cases:
        response = await client.post("/v1/meters", json=body, headers=keys.admin)
        assert_problem(response, 422, "validation_error", field)
    assert (await client.get("/v1/meters", headers=keys.admin)).json()["items"] == []


async def test_longest_event_name_and_most_dimensions_are_accepted(
    client: Client, keys: Keys
) -> None:
    name = "a" + "b.c-d_" * 10 + "xyz"
    assert len(name) == 64
    created = await create_meter(
        client, keys, event_name=name, dimensions=[f"d{i}" for i in range(16)]
    )
    assert len(created["dimensions"]) == 16
    assert (await client.get(f"/v1/meters/{name}", headers=keys.admin)).status_code == 200


async def test_patch_changes_descriptive_fields_and_adds_dimensions(
    client: Client, keys: Keys
) -> None:
    await create_meter(client, keys, dimensions=["region"], metadata={"a": 1})
    patched = await client.patch(
        "/v1/meters/input_tokens",
        json={
            "name": "Prompt tokens",
            "description": "tokens sent to the model",
            "unit": "token",
            "metadata": {"b": 2},
            "dimensions": ["tier", "region"],
        },
        headers=keys.admin,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["name"] == "Prompt tokens"
    assert body["description"] == "tokens sent to the model"
    assert body["unit"] == "token"
    assert body["metadata"] == {"b": 2}
    assert body["dimensions"] == ["region", "tier"]  # existing keys keep their place
    assert body["updated_at"] >= body["created_at"]
    cleared = await client.patch(
        "/v1/meters/input_tokens", json={"description": None}, headers=keys.admin
    )
    assert cleared.json()["description"] is None
    assert cleared.json()["name"] == "Prompt tokens"


async def test_removing_a_dimension_is_409(client: Client, keys: Keys) -> None:
    await create_meter(client, keys, dimensions=["region", "tier"])
    for dimensions in (["region"], [], ["tier", "zone"]):
        response = await client.patch(
            "/v1/meters/input_tokens", json={"dimensions": dimensions}, headers=keys.admin
        )
        assert_problem(response, 409, "dimension_removal")
    got = (await client.get("/v1/meters/input_tokens", headers=keys.admin)).json()
    assert got["dimensions"] == ["region", "tier"]
    reserved = await client.patch(
        "/v1/meters/input_tokens",
        json={"dimensions": ["region", "tier", "user_id"]},
        headers=keys.admin,
    )
    assert_problem(reserved, 422, "validation_error", "dimensions")


async def test_aggregation_and_currency_freeze_once_the_meter_has_events(
    client: Client, keys: Keys, pg_pool: asyncpg.Pool
) -> None:
    await create_meter(client, keys)
    before = await client.patch(
        "/v1/meters/input_tokens",
        json={"aggregation": "last", "currency": "EUR"},
        headers=keys.admin,
    )
    assert before.status_code == 200, before.text
    assert (before.json()["aggregation"], before.json()["currency"]) == ("last", "EUR")

    await pg_pool.execute("UPDATE meters SET has_events = true WHERE event_name = 'input_tokens'")
    for change in ({"aggregation": "sum"}, {"currency": "USD"}, {"aggregation": "count"}):
        response = await client.patch("/v1/meters/input_tokens", json=change, headers=keys.admin)
        assert_problem(response, 409, "meter_has_events")
    unchanged = await client.patch(
        "/v1/meters/input_tokens",
        json={"aggregation": "last", "currency": "EUR", "name": "Renamed"},
        headers=keys.admin,
    )
    assert unchanged.status_code == 200, unchanged.text
    assert unchanged.json()["has_events"] is True
    assert unchanged.json()["name"] == "Renamed"
    added = await client.patch(
        "/v1/meters/input_tokens", json={"dimensions": ["region"]}, headers=keys.admin
    )
    assert added.status_code == 200

    invalid = await client.patch(
        "/v1/meters/input_tokens", json={"currency": "ABC"}, headers=keys.admin
    )
    assert_problem(invalid, 422, "validation_error", "currency")
    invalid = await client.patch(
        "/v1/meters/input_tokens", json={"aggregation": "median"}, headers=keys.admin
    )
    assert_problem(invalid, 422, "validation_error", "aggregation")


async def test_archive_is_idempotent_and_archived_meters_stay_readable(
    client: Client, keys: Keys
) -> None:
    await create_meter(client, keys)
    first = await client.post("/v1/meters/input_tokens/archive", headers=keys.admin)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "archived"
    second = await client.post("/v1/meters/input_tokens/archive", headers=keys.admin)
    assert second.status_code == 200
    assert second.json()["status"] == "archived"
    reader = await keys.make("read")
    got = await client.get("/v1/meters/input_tokens", headers=reader)
    assert got.status_code == 200
    assert got.json()["status"] == "archived"
    # Still billable: prices can be added and listed.
    price = await client.post(
        "/v1/prices",
        json={
            "meter": "input_tokens",
            "unit_amount": "1.00",
            "effective_from": "2026-01-01T00:00:00Z",
        },
        headers=keys.admin,
    )
    assert price.status_code == 201, price.text
    reactivated = await client.patch(
        "/v1/meters/input_tokens", json={"status": "active"}, headers=keys.admin
    )
    assert reactivated.json()["status"] == "active"


async def test_unknown_meter_is_404(client: Client, keys: Keys) -> None:
    assert_problem(await client.get("/v1/meters/nope", headers=keys.admin), 404, "not_found")
    assert_problem(
        await client.patch("/v1/meters/nope", json={"name": "x"}, headers=keys.admin),
        404,
        "not_found",
    )
    assert_problem(
        await client.post("/v1/meters/nope/archive", headers=keys.admin), 404, "not_found"
    )


async def test_meter_list_is_paginated_and_filters_by_status(client: Client, keys: Keys) -> None:
    names = ["a.calls", "b_tokens", "c-seats", "d", "e9"]
    for name in names:
        await create_meter(client, keys, event_name=name)
    await client.post("/v1/meters/c-seats/archive", headers=keys.admin)
    await client.post("/v1/meters/e9/archive", headers=keys.admin)

    async def walk(**query: Any) -> list[str]:
        return await walk_pages(client, "/v1/meters", keys.admin, "event_name", **query)

    assert await walk() == names
    assert await walk(status="active") == ["a.calls", "b_tokens", "d"]
    assert await walk(status="archived") == ["c-seats", "e9"]
    full = (await client.get("/v1/meters", params={"limit": 5}, headers=keys.admin)).json()
    assert len(full["items"]) == 5 and full["next_cursor"] is None
    bad = await client.get("/v1/meters", params={"cursor": "garbage!"}, headers=keys.admin)
    assert_problem(bad, 422, "validation_error")
    bad = await client.get("/v1/meters", params={"status": "deleted"}, headers=keys.admin)
    assert_problem(bad, 422, "validation_error")
    bad = await client.get("/v1/meters", params={"limit": 0}, headers=keys.admin)
    assert_problem(bad, 422, "validation_error")
