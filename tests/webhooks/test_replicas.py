"""The sender across processes: `python -m service serve` twice never posts one message at the
same time, and a receiver that is down while the service restarts still gets every message,
under the webhook-id it was written with."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import asyncpg
import httpx

from service.webhooks.outbox import enqueue
from tests.conftest import TEST_SECRET, Keys
from tests.support.live_server import live_server, service_environment
from tests.support.receiver import running_receiver


def sender_env(database_url: str) -> dict[str, str]:
    return {
        **service_environment(database_url, TEST_SECRET),
        "METERING_WEBHOOK_ALLOW_PRIVATE": "true",
        "METERING_WEBHOOK_SEND_INTERVAL_SECONDS": "0.05",
        "METERING_WEBHOOK_BATCH_SIZE": "5",
        "METERING_WEBHOOK_RETRY_DELAYS_SECONDS": ",".join(["0.5"] * 60),
        "METERING_ROLLUP_FOLD_INTERVAL_SECONDS": "0",
    }


@contextmanager
def servers(database_url: str, count: int) -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [stack.enter_context(live_server(sender_env(database_url))) for _ in range(count)]


async def setup(base: str, keys: Keys, url: str) -> str:
    async with httpx.AsyncClient(base_url=base, headers=keys.admin, trust_env=False) as http:
        answer = await http.post("/v1/tenants", json={"id": "acme", "name": "Acme"})
        assert answer.status_code == 201, answer.text
        answer = await http.post(
            "/v1/webhook-endpoints",
            json={"url": url, "event_types": ["budget.threshold_reached"]},
        )
        assert answer.status_code == 201, answer.text
        endpoint_id: str = answer.json()["id"]
        return endpoint_id


async def cause(pg_pool: asyncpg.Pool, messages: int) -> None:
    async with pg_pool.acquire() as connection, connection.transaction():
        for n in range(messages):
            data = {"budget_id": f"b{n}", "tenant_id": "acme", "threshold_percent": 80}
            assert await enqueue(connection, "acme", "budget.threshold_reached", data) == 1


async def delivery_rows(pg_pool: asyncpg.Pool) -> list[Any]:
    return list(
        await pg_pool.fetch(
            "SELECT id::text AS id, status, attempt_count, "
            "(SELECT count(*) FROM jsonb_array_elements(attempts) AS a "
            " WHERE a->>'status_code' IS NOT NULL) AS answered "
            "FROM webhook_deliveries"
        )
    )


async def test_two_processes_never_post_one_message_concurrently(
    database_url: str, pg_pool: asyncpg.Pool, keys: Keys
) -> None:
    with running_receiver() as receiver, servers(database_url, 2) as bases:
        receiver.delay_seconds = 0.1
        # The first 80 posts fail: retries are where two senders could collide.
        receiver.statuses = [500] * 80
        await setup(bases[0], keys, receiver.url)
        await cause(pg_pool, 40)
        received = await asyncio.to_thread(receiver.wait_for, 120, 60.0)
        for _ in range(100):
            rows = await delivery_rows(pg_pool)
            if all(row["status"] == "delivered" for row in rows):
                break
            await asyncio.sleep(0.1)
    assert receiver.max_in_flight_per_id == 1
    assert len(rows) == 40 and all(row["status"] == "delivered" for row in rows), rows
    per_id = Counter(r.webhook_id for r in received)
    assert set(per_id) == {row["id"] for row in rows}
    # Every post the receiver answered is a recorded attempt: none was made twice behind the
    # other's back. (An attempt may also fail before reaching it: a refused or reset connection.)
    assert per_id == {row["id"]: row["answered"] for row in rows}
    assert sum(per_id.values()) == 120


async def test_a_receiver_down_across_a_restart_gets_every_message(
    database_url: str, pg_pool: asyncpg.Pool, keys: Keys
) -> None:
    # Bound but not listening until the service has restarted: connections are refused, and
    # the servers' own free ports cannot be this one.
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    port = reserved.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks"
    with servers(database_url, 1) as [base]:
        await setup(base, keys, url)
        await cause(pg_pool, 5)
        for _ in range(200):
            rows = await delivery_rows(pg_pool)
            if all(row["attempt_count"] >= 1 for row in rows):
                break
            await asyncio.sleep(0.05)
        assert all(row["attempt_count"] >= 1 and row["status"] == "pending" for row in rows)
    written = {row["id"] for row in rows}
    reserved.close()
    with running_receiver(port) as receiver, servers(database_url, 1):
        received = await asyncio.to_thread(receiver.wait_for, 5, 60.0)
    assert {r.webhook_id for r in received} == written
