"""`max` and `unique_count` meters, `unique_key` and `allow_negative`: what the meters API and
ingestion accept, and the 422s (naming the field) for what they refuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys
from tests.support.problems import assert_problem

Client = AsyncTestClient[Litestar]


def meter(event_name: str, aggregation: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_name": event_name,
        "name": event_name,
        "aggregation": aggregation,
        "currency": "USD",
        **fields,
    }


@pytest.fixture
async def meters(client: Client, keys: Keys) -> dict[str, str]:
    """A tenant, a meter of each new kind, and an ingest key."""
    response = await client.post(
        "/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=keys.admin
    )
    assert response.status_code == 201, response.text
    for body in (
        meter("peak_sessions", "max"),
        meter("active_users", "unique_count", unique_key="user_id"),
        meter("active_regions", "unique_count", unique_key="region", dimensions=["region"]),
        meter("credits", "sum", allow_negative=True),
        meter("tokens", "sum"),
    ):
        response = await client.post("/v1/meters", json=body, headers=keys.admin)
        assert response.status_code == 201, response.text
    return await keys.make("ingest", name="gateway")


async def test_new_meters_show_their_options(
    client: Client, keys: Keys, meters: dict[str, str]
) -> None:
    answer = (await client.get("/v1/meters/active_regions", headers=keys.admin)).json()
    assert (answer["aggregation"], answer["unique_key"], answer["allow_negative"]) == (
        "unique_count",
        "region",
        False,
    )
    answer = (await client.get("/v1/meters/credits", headers=keys.admin)).json()
    assert (answer["aggregation"], answer["unique_key"], answer["allow_negative"]) == (
        "sum",
        None,
        True,
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (meter("mau", "unique_count"), "unique_key"),
        (meter("mau", "unique_count", unique_key="plan"), "unique_key"),
        (meter("mau", "unique_count", unique_key="plan", dimensions=["tier"]), "unique_key"),
        (meter("calls", "count", unique_key="user_id"), "unique_key"),
        (meter("tokens_in", "sum", unique_key="user_id"), "unique_key"),
        (meter("calls", "count", allow_negative=True), "allow_negative"),
        (meter("peak", "max", allow_negative=True), "allow_negative"),
        (meter("seats", "last", allow_negative=True), "allow_negative"),
        (meter("mau", "unique_count", unique_key="user_id", allow_negative=True), "allow_negative"),
        (meter("peak", "median"), "aggregation"),
    ],
)
async def test_invalid_meter_options_are_422_naming_the_field(
    client: Client, keys: Keys, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/meters", json=body, headers=keys.admin)
    assert_problem(response, 422, "validation_error", field)


async def test_updates_keep_the_options_consistent(
    client: Client, keys: Keys, meters: dict[str, str]
) -> None:
    response = await client.patch(
        "/v1/meters/peak_sessions", json={"allow_negative": True}, headers=keys.admin
    )
    assert_problem(response, 422, "validation_error", "allow_negative")
    response = await client.patch(
        "/v1/meters/tokens", json={"unique_key": "user_id"}, headers=keys.admin
    )
    assert_problem(response, 422, "validation_error", "unique_key")
    response = await client.patch(
        "/v1/meters/active_users", json={"unique_key": "region"}, headers=keys.admin
    )
    assert_problem(response, 422, "validation_error", "unique_key")
    # Without events, a meter may become a unique_count meter when it says of what.
    response = await client.patch(
        "/v1/meters/tokens",
        json={"aggregation": "unique_count", "unique_key": "model"},
        headers=keys.admin,
    )
    assert response.status_code == 200, response.text
    response = await client.patch(
        "/v1/meters/credits", json={"allow_negative": False}, headers=keys.admin
    )
    assert response.status_code == 200 and response.json()["allow_negative"] is False


def event(event_name: str, key: str, **fields: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "event_name": event_name,
        "idempotency_key": key,
        "timestamp": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "user_id": "u1",
        **fields,
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (event("active_users", "a", value="1"), "value"),
        (event("active_users", "b", value=0), "value"),
        (event("tokens", "c", value="-1"), "value"),
        (event("peak_sessions", "d", value="-3"), "value"),
        (event("peak_sessions", "e"), "value"),
        (
            {
                **event("x", "f"),
                "event_name": None,
                "values": {"active_users": 2, "tokens": 10},
            },
            "values",
        ),
    ],
)
async def test_invalid_events_are_422_naming_the_field(
    client: Client, meters: dict[str, str], body: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in body.items() if v is not None}
    response = await client.post("/v1/events", json=body, headers=meters)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"].startswith(field), response.json()


async def test_accepted_events_of_the_new_meters(client: Client, meters: dict[str, str]) -> None:
    for body in (
        event("active_users", "g"),
        event("active_users", "h", value=None),
        event("active_regions", "i", dimensions={"region": "eu"}),
        event("credits", "j", value="-12.5"),
        event("credits", "k", value="20"),
        event("peak_sessions", "l", value="7"),
    ):
        response = await client.post("/v1/events", json=body, headers=meters)
        assert response.status_code == 202, response.text
