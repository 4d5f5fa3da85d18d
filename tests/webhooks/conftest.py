"""Webhook tests: an app whose senders run (fast retries, loopback receivers allowed), a real
local receiver, and helpers that cause messages the way users do (finalizing invoices)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.app import create_app
from tests.conftest import Keys, make_settings
from tests.support.receiver import Receiver, running_receiver

Client = AsyncTestClient[Litestar]
# Five attempts in about a second, then failed.
FAST_RETRIES = "0.2,0.2,0.2,0.2"


# One app per test, started after the test's TRUNCATE and stopped before the next: a sender
# polling while TRUNCATE locks table after table can deadlock with it.
@pytest.fixture
async def hooks_client(database_url: str) -> AsyncIterator[Client]:
    settings = make_settings(
        database_url,
        webhook_allow_private=True,
        webhook_send_interval_seconds=0.05,
        webhook_retry_delays_seconds=FAST_RETRIES,
        webhook_timeout_seconds=2.0,
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def last_month() -> str:
    today = datetime.now(UTC)
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return f"{year:04d}-{month:02d}"


async def create_tenant(client: Client, keys: Keys, tenant_id: str = "acme") -> None:
    answer = await client.post(
        "/v1/tenants", json={"id": tenant_id, "name": tenant_id.title()}, headers=keys.admin
    )
    assert answer.status_code == 201, answer.text


async def register(
    client: Client, keys: Keys, url: str, event_types: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    answer = await client.post(
        "/v1/webhook-endpoints",
        json={"url": url, "event_types": event_types or ["invoice.finalized"], **extra},
        headers=keys.admin,
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def finalize(client: Client, keys: Keys, tenant_id: str = "acme") -> dict[str, Any]:
    answer = await client.post(
        f"/v1/tenants/{tenant_id}/invoices", json={"period": last_month()}, headers=keys.admin
    )
    assert answer.status_code == 201, answer.text
    invoice: dict[str, Any] = answer.json()[0]
    return invoice


async def deliveries(client: Client, keys: Keys, endpoint_id: str) -> list[dict[str, Any]]:
    answer = await client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=keys.admin)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def wait_for_status(
    client: Client, keys: Keys, endpoint_id: str, status: str, count: int = 1, within: float = 20
) -> list[dict[str, Any]]:
    """The endpoint's deliveries once `count` of them have `status`."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        items = await deliveries(client, keys, endpoint_id)
        if sum(item["status"] == status for item in items) >= count:
            return items
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {count} {status} deliveries in {within} s: {items}")
        await asyncio.sleep(0.05)
