"""`period` on GET /v1/events: the tenant's local day (or `timezone`'s), echoed with its offset."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from service.common.periods import resolve_period
from tests.conftest import Keys
from tests.events.conftest import Client, EventFactory

KATHMANDU = ZoneInfo("Asia/Kathmandu")


@pytest.fixture
async def nepal(client: Client, keys: Keys, seeded: dict[str, int], event: EventFactory) -> date:
    """Tenant `nepal` (+05:45) with events just inside and just outside a local day three days
    ago; returns that day."""
    response = await client.post(
        "/v1/tenants",
        json={"id": "nepal", "name": "Nepal", "timezone": "Asia/Kathmandu"},
        headers=keys.admin,
    )
    assert response.status_code == 201, response.text
    day = datetime.now(KATHMANDU).date() - timedelta(days=3)

    def local(on: date, hour: int, minute: int) -> str:
        return datetime.combine(on, time(hour, minute), KATHMANDU).isoformat()

    times = {
        "before": local(day - timedelta(days=1), 23, 50),
        "first": local(day, 0, 0),
        "last": local(day, 23, 59),
        "after": local(day + timedelta(days=1), 0, 0),
    }
    ingest = await keys.make("ingest")
    batch = [
        event(tenant_id="nepal", idempotency_key=name, timestamp=at) for name, at in times.items()
    ]
    response = await client.post("/v1/events/batch", json={"events": batch}, headers=ingest)
    assert response.json()["accepted"] == 4, response.text
    return day


async def listing(client: Client, key: dict[str, str], **params: Any) -> Any:
    query = {("from" if k == "from_" else k): v for k, v in params.items()}
    return await client.get("/v1/events", params=query, headers=key)


async def test_a_local_day(client: Client, keys: Keys, nepal: date) -> None:
    reader = await keys.make("read", tenant_id="nepal")
    response = await listing(client, reader, period=nepal.isoformat())
    assert response.status_code == 200, response.text
    page = response.json()
    assert {item["idempotency_key"] for item in page["items"]} == {"last", "first"}
    assert page["from"] == f"{nepal.isoformat()}T00:00:00+05:45"
    assert page["to"] == f"{(nepal + timedelta(days=1)).isoformat()}T00:00:00+05:45"
    assert page["timezone"] == "Asia/Kathmandu"


async def test_the_same_date_in_utc(client: Client, keys: Keys, nepal: date) -> None:
    """The UTC date runs 5:45 behind: Kathmandu's midnight is 18:15 UTC the day before."""
    reader = await keys.make("read", tenant_id="nepal")
    response = await listing(client, reader, period=nepal.isoformat(), timezone="UTC")
    assert response.status_code == 200, response.text
    page = response.json()
    assert (page["from"], page["timezone"]) == (f"{nepal.isoformat()}T00:00:00Z", "UTC")
    assert {item["idempotency_key"] for item in page["items"]} == {"after", "last"}
    earlier = await listing(
        client, reader, period=(nepal - timedelta(days=1)).isoformat(), timezone="UTC"
    )
    assert {item["idempotency_key"] for item in earlier.json()["items"]} == {"first", "before"}


async def test_rolling_seven_days(client: Client, keys: Keys, nepal: date) -> None:
    reader = await keys.make("read", tenant_id="nepal")
    before = resolve_period("7d", KATHMANDU, datetime.now(UTC))
    page = (await listing(client, reader, period="7d")).json()
    after = resolve_period("7d", KATHMANDU, datetime.now(UTC))
    echoed = (datetime.fromisoformat(page["from"]), datetime.fromisoformat(page["to"]))
    assert echoed in (before, after)
    assert len(page["items"]) == 4


async def test_explicit_ranges_are_echoed_in_the_zone(
    client: Client, keys: Keys, nepal: date
) -> None:
    reader = await keys.make("read", tenant_id="nepal")
    start = datetime.combine(nepal, time(), KATHMANDU).astimezone(UTC)
    page = (await listing(client, reader, from_=start.isoformat())).json()
    assert page["from"] == f"{nepal.isoformat()}T00:00:00+05:45"
    assert page["to"] is None
    assert {item["idempotency_key"] for item in page["items"]} == {"first", "last", "after"}


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"period": "today", "from_": "2026-11-01T00:00:00Z"}, ["period", "from"]),
        ({"period": "today", "to": "2026-11-01T00:00:00Z"}, ["period", "to"]),
        ({"period": "fortnight"}, ["period"]),
        ({"period": "2026-02-29"}, ["period"]),
        ({"period": "today", "timezone": "Nowhere/Land"}, ["timezone"]),
        ({"period": "9999-12"}, ["period"]),
    ],
)
async def test_misused_periods_are_422_naming_the_field(
    client: Client, keys: Keys, nepal: date, params: dict[str, Any], fields: list[str]
) -> None:
    reader = await keys.make("read", tenant_id="nepal")
    response = await listing(client, reader, **params)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == fields


async def test_unknown_tenant_is_404(client: Client, keys: Keys, nepal: date) -> None:
    response = await listing(client, keys.admin, tenant_id="ghost", period="today")
    assert response.status_code == 404, response.text
