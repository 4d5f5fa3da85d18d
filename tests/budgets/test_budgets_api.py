"""Budgets: the admin API, and the check a gateway calls, which sees every event acknowledged
before it (read-your-writes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys
from tests.support.problems import assert_problem

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def acme(client: Client, keys: Keys) -> None:
    answer = await client.post(
        "/v1/tenants",
        json={"id": "acme", "name": "Acme", "timezone": "Europe/Berlin"},
        headers=keys.admin,
    )
    assert answer.status_code == 201, answer.text
    for event_name, aggregation in (
        ("input_tokens", "sum"),
        ("output_tokens", "sum"),
        ("calls", "count"),
        ("gauge", "last"),
    ):
        meter = {
            "event_name": event_name,
            "name": event_name,
            "aggregation": aggregation,
            "currency": "USD",
        }
        answer = await client.post("/v1/meters", json=meter, headers=keys.admin)
        assert answer.status_code == 201, answer.text


def budget(**fields: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "name": "key k1 daily tokens",
        "period": "day",
        "limit": {"meter": "input_tokens", "quantity": "100"},
        "scope": {"api_key_id": "k1"},
        **fields,
    }


def event(key: str, value: Any, event_name: str = "input_tokens", **fields: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "event_name": event_name,
        "idempotency_key": key,
        "timestamp": datetime.now(UTC).isoformat(),
        "value": value,
        **fields,
    }


async def check(client: Client, headers: dict[str, str], **query: str) -> dict[str, Any]:
    answer = await client.get(
        "/v1/budgets/check", params={"tenant_id": "acme", **query}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_create_get_list_delete(client: Client, keys: Keys, acme: None) -> None:
    billing = await keys.make("billing", tenant_id="acme")
    created = []
    for n in range(3):
        answer = await client.post(
            "/v1/budgets",
            json=budget(name=f"b{n}", thresholds_percent=[100, 50, 50]),
            headers=billing,
        )
        assert answer.status_code == 201, answer.text
        created.append(answer.json())
    first = created[0]
    assert first["limit"] == {"meter": "input_tokens", "quantity": "100"}
    assert first["scope"] == {"api_key_id": "k1"}
    assert first["thresholds_percent"] == [50, 100]
    default = await client.post(
        "/v1/budgets", json={k: v for k, v in budget().items() if k != "scope"}, headers=billing
    )
    assert default.json()["thresholds_percent"] == [80, 100]
    assert default.json()["scope"] == {}

    got = await client.get(f"/v1/budgets/{first['id']}", headers=billing)
    assert got.json() == first
    page = await client.get("/v1/budgets", params={"limit": 2}, headers=billing)
    assert [b["id"] for b in page.json()["items"]] == [c["id"] for c in created[:2]]
    rest = await client.get(
        "/v1/budgets",
        params={"limit": 2, "cursor": page.json()["next_cursor"], "tenant_id": "acme"},
        headers=billing,
    )
    assert [b["id"] for b in rest.json()["items"]] == [created[2]["id"], default.json()["id"]]

    assert (await client.delete(f"/v1/budgets/{first['id']}", headers=billing)).status_code == 204
    assert (await client.get(f"/v1/budgets/{first['id']}", headers=billing)).status_code == 404


async def test_bad_budgets_name_the_field(client: Client, keys: Keys, acme: None) -> None:
    cases = [
        (budget(limit={"cost": "-5"}), "limit.cost"),
        (budget(limit={"cost": "0"}), "limit.cost"),
        (budget(limit={"cost": "1.0000000000001"}), "limit.cost"),
        (budget(limit={"cost": "5", "meter": "input_tokens", "quantity": "1"}), "limit"),
        (budget(limit={"cost": "5", "currency": "dollars"}), "limit.currency"),
        (budget(limit={"cost": "5", "currency": "EUR"}), "limit.currency"),
        (budget(limit={"meter": "input_tokens", "quantity": "1", "currency": "USD"}), "limit"),
        (budget(limit={"cost": {"amount": "5", "currency": "USD"}}), "limit.cost"),
        (budget(limit={"meter": "nope", "quantity": "1"}), "limit.meter"),
        (budget(limit={"meter": "gauge", "quantity": "1"}), "limit.meter"),
        (budget(limit={"meter": "input_tokens", "quantity": "0"}), "limit.quantity"),
        (budget(limit={"meter": "input_tokens"}), "limit"),
        (budget(period="week"), "period"),
        (budget(thresholds_percent=[0]), "thresholds_percent"),
        (budget(scope={"team": "x"}), "scope"),
        (budget(tenant_id="nope"), "tenant_id"),
    ]
    for body, field in cases:
        answer = await client.post("/v1/budgets", json=body, headers=keys.admin)
        assert answer.status_code == 422, (body, answer.text)
        assert field in answer.text, (field, answer.text)
    answer = await client.get(
        "/v1/budgets/check", params={"tenant_id": "acme", "apikey": "k1"}, headers=keys.admin
    )
    assert_problem(answer, 422, "validation_error", field="apikey")


async def test_check_sees_every_event_acknowledged_before_it(
    client: Client, keys: Keys, acme: None
) -> None:
    ingest = await keys.make("ingest", tenant_id="acme")
    # Accepted before the budget exists: not counted.
    early = event("early", 500, api_key_id="k1")
    assert (await client.post("/v1/events", json=early, headers=ingest)).status_code == 202
    answer = await client.post("/v1/budgets", json=budget(), headers=keys.admin)
    budget_id = answer.json()["id"]
    count_budget = await client.post(
        "/v1/budgets",
        json=budget(name="calls", limit={"meter": "calls", "quantity": 3}, scope=None),
        headers=keys.admin,
    )
    assert count_budget.status_code == 201, count_budget.text

    # Accepted after it, timestamped a moment before it (the request began earlier): counts.
    first = event("e1", "60", api_key_id="k1")
    first["timestamp"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    answer = await client.post("/v1/events", json=first, headers=ingest)
    assert answer.status_code == 202
    standing = await check(client, ingest, api_key_id="k1")
    assert standing["allowed"] is True
    [tokens] = [b for b in standing["budgets"] if b["id"] == budget_id]
    assert (tokens["used"], tokens["remaining"]) == ("60", "40")
    assert tokens["limit"] == {"meter": "input_tokens", "quantity": "100"}
    # The tenant's calendar day in Europe/Berlin.
    start = datetime.fromisoformat(tokens["period_start"])
    end = datetime.fromisoformat(tokens["period_end"])
    assert start <= datetime.now(UTC) < end
    assert start.astimezone(end.tzinfo).utcoffset() is not None

    # Another key's usage, and a repeat of an event, do not count for k1.
    batch = {"events": [event("e2", 1000, api_key_id="k2"), first]}
    assert (await client.post("/v1/events/batch", json=batch, headers=ingest)).status_code == 200
    [tokens] = [
        b for b in (await check(client, ingest, api_key_id="k1"))["budgets"] if b["id"] == budget_id
    ]
    assert tokens["used"] == "60"

    # An LLM call's `values` event counts its input_tokens.
    call = event("call", None, api_key_id="k1")
    del call["event_name"], call["value"]
    call["values"] = {"input_tokens": "45.5", "output_tokens": 10}
    assert (await client.post("/v1/events", json=call, headers=ingest)).status_code == 202
    standing = await check(client, ingest, api_key_id="k1")
    [tokens] = [b for b in standing["budgets"] if b["id"] == budget_id]
    assert (tokens["used"], tokens["remaining"]) == ("105.5", "0")
    assert standing["allowed"] is False

    # Other callers: k1's budget does not apply to them; the tenant-wide count budget does.
    read = await keys.make("read")
    standing = await check(client, read, api_key_id="k2")
    assert [b["name"] for b in standing["budgets"]] == ["calls"]
    assert standing["allowed"] is True
    for n in range(3):
        await client.post("/v1/events", json=event(f"c{n}", None, "calls"), headers=ingest)
    standing = await check(client, read)
    assert [(b["name"], b["used"], b["remaining"]) for b in standing["budgets"]] == [
        ("calls", "3", "0")
    ]
    assert standing["allowed"] is False


async def test_check_is_tenant_bound(client: Client, keys: Keys, acme: None) -> None:
    answer = await client.post(
        "/v1/tenants", json={"id": "globex", "name": "Globex"}, headers=keys.admin
    )
    assert answer.status_code == 201
    other = await keys.make("read", tenant_id="globex")
    answer = await client.get("/v1/budgets/check", params={"tenant_id": "acme"}, headers=other)
    assert answer.status_code == 403
