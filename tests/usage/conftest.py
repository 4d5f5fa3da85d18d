"""Fixtures for usage queries: tenants in zones with awkward DST rules, meters of each
aggregation, and a way to store events at any time (historic DST days included) through the
real ingest SQL, bypassing only the API's late-arrival window."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.events.repository import EventRow, store_events
from tests.conftest import Keys

Client = AsyncTestClient[Litestar]

TENANTS = {
    "acme": "Europe/Berlin",
    "globex": "America/New_York",
    "initech": "Australia/Lord_Howe",
}
METERS = [
    # event_name, aggregation, dimensions
    ("input_tokens", "sum", ["region", "tier"]),
    ("api_calls", "count", []),
    ("seats", "last", ["region"]),
]


@dataclass(frozen=True)
class Ev:
    """An event as the test sees it; `id` is filled in once stored."""

    tenant_id: str
    meter: str
    ts: datetime
    value: Decimal | None
    key: str
    attribution: dict[str, str | None] = field(default_factory=dict)
    dimensions: dict[str, str] = field(default_factory=dict)
    id: int = 0


@pytest.fixture
async def world(client: Client, keys: Keys, pg_pool: asyncpg.Pool) -> dict[str, int]:
    """Tenants and meters; returns meter ids by event_name."""
    for tenant_id, zone in TENANTS.items():
        response = await client.post(
            "/v1/tenants",
            json={"id": tenant_id, "name": tenant_id, "timezone": zone},
            headers=keys.admin,
        )
        assert response.status_code == 201, response.text
    ids: dict[str, int] = {}
    for event_name, aggregation, dimensions in METERS:
        ids[event_name] = await pg_pool.fetchval(
            "INSERT INTO meters (event_name, name, aggregation, dimensions, currency, unit) "
            "VALUES ($1, $1, $2, $3, 'USD', 'units') RETURNING id",
            event_name,
            aggregation,
            dimensions,
        )
    return ids


@pytest.fixture
async def reader(keys: Keys) -> dict[str, str]:
    return await keys.make("read", name="dashboard")


def event_rows(meter_ids: dict[str, int], events: list[Ev]) -> list[EventRow]:
    return [
        EventRow(
            tenant_id=e.tenant_id,
            meter_id=meter_ids[e.meter],
            idempotency_key=e.key,
            payload_hash=hashlib.sha256(e.key.encode()).digest(),
            value=e.value,
            ts=e.ts,
            org_id=e.attribution.get("org_id"),
            project_id=e.attribution.get("project_id"),
            api_key_id=e.attribution.get("api_key_id"),
            user_id=e.attribution.get("user_id"),
            model=e.attribution.get("model"),
            dimensions_json=json.dumps(e.dimensions),
            metadata_json=None,
        )
        for e in events
    ]


async def store(pg_pool: asyncpg.Pool, meter_ids: dict[str, int], events: list[Ev]) -> list[Ev]:
    """Store events through the ingest SQL (events + rollups + model rollups, one statement);
    return them with their ids."""
    async with pg_pool.acquire() as connection, connection.transaction():
        stored = await store_events(connection, event_rows(meter_ids, events))
    return [
        Ev(
            tenant_id=e.tenant_id,
            meter=e.meter,
            ts=e.ts,
            value=e.value,
            key=e.key,
            attribution=e.attribution,
            dimensions=e.dimensions,
            id=stored[(e.tenant_id, e.key)].id,
        )
        for e in events
    ]


async def usage(
    client: Client, key: dict[str, str], expect: int = 200, **params: Any
) -> dict[str, Any]:
    """GET /v1/usage; `from_` stands for `from`; list values repeat the parameter."""
    query: list[tuple[str, str]] = []
    for name, value in params.items():
        name = "from" if name == "from_" else name
        for item in value if isinstance(value, list) else [value]:
            query.append((name, str(item)))
    response = await client.get("/v1/usage", params=query, headers=key)
    assert response.status_code == expect, response.text
    return response.json()  # type: ignore[no-any-return]
