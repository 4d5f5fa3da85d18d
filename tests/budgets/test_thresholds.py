"""Thresholds: crossing one emits budget.threshold_reached once per budget, threshold and
period, in the transaction of the usage that crossed it, however many batches race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from standardwebhooks.webhooks import Webhook

from service.app import create_app
from tests.conftest import Keys, make_settings
from tests.support.receiver import Receiver, running_receiver

Client = AsyncTestClient[Litestar]


@pytest.fixture  # per test: see tests/webhooks/conftest.py
async def sending_client(database_url: str) -> AsyncIterator[Client]:
    settings = make_settings(
        database_url,
        webhook_allow_private=True,
        webhook_send_interval_seconds=0.05,
        webhook_retry_delays_seconds="0.2,0.2",
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


async def setup(client: Client, keys: Keys, receiver_url: str) -> tuple[str, str]:
    for path, body in (
        ("/v1/tenants", {"id": "acme", "name": "Acme", "timezone": "America/New_York"}),
        (
            "/v1/meters",
            {"event_name": "tokens", "name": "Tokens", "aggregation": "sum", "currency": "USD"},
        ),
    ):
        answer = await client.post(path, json=body, headers=keys.admin)
        assert answer.status_code == 201, answer.text
    answer = await client.post(
        "/v1/webhook-endpoints",
        json={"url": receiver_url, "event_types": ["budget.threshold_reached"]},
        headers=keys.admin,
    )
    assert answer.status_code == 201, answer.text
    secret: str = answer.json()["secret"]
    answer = await client.post(
        "/v1/budgets",
        json={
            "tenant_id": "acme",
            "name": "monthly tokens",
            "period": "month",
            "limit": {"meter": "tokens", "quantity": "100"},
            "thresholds_percent": [50, 100],
        },
        headers=keys.admin,
    )
    assert answer.status_code == 201, answer.text
    budget_id: str = answer.json()["id"]
    return secret, budget_id


def batch(n: int) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "events": [
            {
                "tenant_id": "acme",
                "event_name": "tokens",
                "idempotency_key": f"b{n}-{i}",
                "timestamp": now,
                "value": 1,
                "user_id": f"u{n % 7}",
            }
            for i in range(2)
        ]
    }


async def test_a_threshold_crossed_by_50_concurrent_batches_fires_once(
    sending_client: Client, keys: Keys, receiver: Receiver, pg_pool: asyncpg.Pool
) -> None:
    secret, budget_id = await setup(sending_client, keys, receiver.url)
    ingest = await keys.make("ingest", tenant_id="acme")

    async def send(n: int) -> None:
        answer = await sending_client.post("/v1/events/batch", json=batch(n), headers=ingest)
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 2

    # 50 batches of 2: the total goes from 0 to exactly 100, crossing 50 % and 100 %.
    await asyncio.gather(*(send(n) for n in range(50)))

    alerts = await pg_pool.fetch(
        "SELECT threshold_percent, used FROM budget_alerts ORDER BY threshold_percent"
    )
    assert [a["threshold_percent"] for a in alerts] == [50, 100]
    # The alert records the total of the statement that crossed it.
    assert 50 <= alerts[0]["used"] < 52
    assert alerts[1]["used"] == 100
    rows = await pg_pool.fetch(
        "SELECT type FROM webhook_deliveries WHERE type = 'budget.threshold_reached'"
    )
    assert len(rows) == 2

    received = await asyncio.to_thread(receiver.wait_for, 2)
    await asyncio.sleep(0.5)  # nothing more comes
    assert len(receiver.received) == 2
    bodies = sorted(
        (Webhook(secret).verify(r.body, r.headers) for r in received),
        key=lambda b: b["data"]["threshold_percent"],
    )
    assert [b["type"] for b in bodies] == ["budget.threshold_reached"] * 2
    data = bodies[1]["data"]
    assert data["budget_id"] == budget_id
    assert data["tenant_id"] == "acme"
    assert data["threshold_percent"] == 100
    assert data["used"] == "100"
    assert data["limit"] == {"meter": "tokens", "quantity": "100"}
    # The tenant's calendar month in America/New_York.
    start = datetime.fromisoformat(data["period_start"])
    end = datetime.fromisoformat(data["period_end"])
    assert start <= datetime.now(UTC) < end
    assert start.astimezone(UTC).hour in (4, 5) and start.astimezone(UTC).day == 1

    # More usage in the same period fires nothing more.
    await send(50)
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 2
    assert await pg_pool.fetchval("SELECT count(*) FROM budget_alerts") == 2
