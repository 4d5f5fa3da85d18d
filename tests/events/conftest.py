"""Fixtures for ingestion tests: tenants and meters seeded directly (the meters API has its own
tests), keys of the scopes ingestion needs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys

Client = AsyncTestClient[Litestar]

METERS = [
    # event_name, aggregation, dimensions
    ("input_tokens", "sum", ["region"]),
    ("api_calls", "count", []),
    ("seats", "last", []),
]


@pytest.fixture
async def seeded(client: Client, keys: Keys, pg_pool: asyncpg.Pool) -> dict[str, int]:
    for tenant_id, status in (("acme", "active"), ("globex", "active"), ("frozen", "suspended")):
        response = await client.post(
            "/v1/tenants",
            json={"id": tenant_id, "name": tenant_id, "status": status},
            headers=keys.admin,
        )
        assert response.status_code == 201, response.text
    ids: dict[str, int] = {}
    for event_name, aggregation, dimensions in METERS:
        ids[event_name] = await pg_pool.fetchval(
            "INSERT INTO meters (event_name, name, aggregation, dimensions, currency) "
            "VALUES ($1, $1, $2, $3, 'USD') RETURNING id",
            event_name,
            aggregation,
            dimensions,
        )
    await pg_pool.execute(
        "INSERT INTO meters (event_name, name, aggregation, currency, status) "
        "VALUES ('old_meter', 'Old', 'sum', 'USD', 'archived')"
    )
    return ids


@pytest.fixture
async def ingest_key(keys: Keys) -> dict[str, str]:
    return await keys.make("ingest", name="gateway")


def recent(minutes_ago: float = 10) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


EventFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def event() -> EventFactory:
    counter = iter(range(1_000_000))

    def make(**fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "tenant_id": "acme",
            "event_name": "input_tokens",
            "idempotency_key": f"evt-{next(counter)}",
            "timestamp": recent(),
            "value": "100",
            "model": "gpt-4o",
            "user_id": "u1",
        }
        body.update(fields)
        return {k: v for k, v in body.items() if v is not ...}

    return make
