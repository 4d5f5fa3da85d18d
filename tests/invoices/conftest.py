"""Fixtures for invoice tests: tenants, meters and prices through the admin API, and usage in
past (ended) periods written through the real ingestion SQL.

Ingestion refuses timestamps older than the late-arrival window and the current month has not
ended, so usage for a finalizable period goes through `store_events` directly: the same
statement the API runs, writing events and rollups in one transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
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
SINCE = "2026-01-01T00:00:00Z"


@dataclass(frozen=True)
class Usage:
    """One event to store: meter, event time, value, attribution and dimensions."""

    event_name: str
    ts: str
    value: Decimal | str | int | None = None
    model: str | None = None
    user_id: str | None = None
    project_id: str | None = None
    dimensions: dict[str, str] = field(default_factory=dict)


Record = Callable[..., Awaitable[int]]


@pytest.fixture
def record(pg_pool: asyncpg.Pool) -> Record:
    """`await record("acme", [Usage(...), ...])` stores the events (and their rollups) through
    the ingestion SQL in one transaction; returns how many were inserted."""
    counter = iter(range(10**9))

    async def store(tenant_id: str, usage: Sequence[Usage]) -> int:
        found = await pg_pool.fetch("SELECT id, event_name, aggregation FROM meters")
        meters = {row["event_name"]: row["id"] for row in found}
        # Validation marks events of max meters (their statements keep maxes); so does this.
        maxed = {row["event_name"] for row in found if row["aggregation"] == "max"}
        rows = []
        for item in usage:
            key = f"test-{next(counter)}"
            value = None if item.value is None else Decimal(str(item.value))
            rows.append(
                EventRow(
                    tenant_id=tenant_id,
                    meter_id=meters[item.event_name],
                    idempotency_key=key,
                    payload_hash=hashlib.sha256(key.encode()).digest(),
                    value=value,
                    ts=datetime.fromisoformat(item.ts),
                    org_id=None,
                    project_id=item.project_id,
                    api_key_id=None,
                    user_id=item.user_id,
                    model=item.model,
                    dimensions_json=json.dumps(item.dimensions, sort_keys=True),
                    metadata_json=None,
                    has_max=item.event_name in maxed,
                )
            )
        async with pg_pool.acquire() as connection, connection.transaction():
            stored = await store_events(connection, rows)
        return sum(1 for hit in stored.values() if hit.inserted)

    return store


async def create_tenant(client: Client, keys: Keys, tenant_id: str, **fields: Any) -> None:
    body = {"id": tenant_id, "name": tenant_id.title(), **fields}
    response = await client.post("/v1/tenants", json=body, headers=keys.admin)
    assert response.status_code == 201, response.text


async def create_meter(
    client: Client, keys: Keys, event_name: str, name: str, aggregation: str, **fields: Any
) -> None:
    body = {"event_name": event_name, "name": name, "aggregation": aggregation, **fields}
    body.setdefault("currency", "USD")
    response = await client.post("/v1/meters", json=body, headers=keys.admin)
    assert response.status_code == 201, response.text


async def create_price(client: Client, keys: Keys, meter: str, **fields: Any) -> str:
    body = {"meter": meter, "effective_from": SINCE, **fields}
    response = await client.post("/v1/prices", json=body, headers=keys.admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def finalize(client: Client, headers: dict[str, str], tenant_id: str, period: str) -> Any:
    return await client.post(
        f"/v1/tenants/{tenant_id}/invoices", json={"period": period}, headers=headers
    )


async def finalized(
    client: Client, headers: dict[str, str], tenant_id: str, period: str
) -> list[dict[str, Any]]:
    response = await finalize(client, headers, tenant_id, period)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def preview(
    client: Client, headers: dict[str, str], tenant_id: str, period: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/tenants/{tenant_id}/invoices/preview", params={"period": period}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def brief(line: dict[str, Any]) -> tuple[Any, ...]:
    """The parts of a line the hand-written expectations spell out."""
    return (
        line["meter"],
        line["description"],
        line["match"],
        line["quantity"],
        line["unit_amount"],
        line["per_units"],
        line["amount"],
        line["tier"],
        line["unpriced"],
        line["adjusts_period"],
    )


@pytest.fixture
async def billing(keys: Keys) -> dict[str, str]:
    return await keys.make("billing", name="finance")
