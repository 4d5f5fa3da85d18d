"""Backpressure: an exhausted connection pool answers 503 `overloaded` after the pool timeout
(not a hang), the pool gauges show in-use and waiting connections, and oversized bodies get
413."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.app import create_app
from tests.conftest import Keys, make_settings
from tests.support.in_loop import in_loop_client

IN_USE = "metering_db_pool_connections_in_use"
WAITING = "metering_db_pool_waiting_requests"


async def gauge(client: httpx.AsyncClient, name: str) -> float:
    response = await client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in /metrics")


@contextlib.asynccontextmanager
async def holding_every_connection(engine: AsyncEngine) -> AsyncIterator[list[AsyncConnection]]:
    """Check out every connection of the pool (pool_size, no overflow) and keep them."""
    async with contextlib.AsyncExitStack() as stack:
        held = []
        for _ in range(engine.pool.size()):  # type: ignore[attr-defined]
            connection = await stack.enter_async_context(engine.connect())
            await connection.execute(text("SELECT 1"))
            held.append(connection)
        yield held


async def test_exhausted_pool_answers_503_overloaded_instead_of_hanging(
    database_url: str, keys: Keys
) -> None:
    settings = make_settings(database_url, db_pool_size=2, db_pool_timeout_seconds=1.0)
    app = create_app(settings)
    async with in_loop_client(app) as client:
        in_use_before = await gauge(client, IN_USE)
        waiting_before = await gauge(client, WAITING)
        async with holding_every_connection(app.state.engine):
            assert await gauge(client, IN_USE) == in_use_before + 2
            started = time.monotonic()
            # The key check itself needs a connection (no key cache in tests), so this waits.
            request = asyncio.create_task(client.get("/v1/tenants", headers=keys.admin))
            for _ in range(100):
                if await gauge(client, WAITING) == waiting_before + 1:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the waiting request never showed in the waiting gauge")
            response = await asyncio.wait_for(request, 30)
            elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "overloaded"
        assert response.headers["retry-after"] == "1"
        assert elapsed < 15, f"took {elapsed:.1f} s for a 1 s pool timeout"  # did not hang
        assert await gauge(client, WAITING) == waiting_before
        assert await gauge(client, IN_USE) == in_use_before
        # Connections back in the pool: the same request succeeds.
        again = await client.get("/v1/tenants", headers=keys.admin)
        assert again.status_code == 200, again.text


async def test_body_over_max_body_bytes_is_413(database_url: str, keys: Keys) -> None:
    app = create_app(make_settings(database_url, max_body_bytes=1_000))
    async with AsyncTestClient(app=app) as client:
        response = await client.post(
            "/v1/tenants",
            json={"id": "big", "name": "x" * 2_000},
            headers=keys.admin,
        )
        assert response.status_code == 413, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "payload_too_large"
        small = await client.post(
            "/v1/tenants", json={"id": "small", "name": "Small"}, headers=keys.admin
        )
        assert small.status_code == 201, small.text
