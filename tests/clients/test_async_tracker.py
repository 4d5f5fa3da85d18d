"""AsyncTracker against a real server: the same buffering, counting and exactly-once delivery
as Tracker, on the event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from metering_client import AsyncTracker, BufferFull, Rejection
from tests.clients.conftest import Proxy, ProxyAction, Setup, stored_events, stored_keys
from tests.support.live_server import free_port


async def test_records_from_many_tasks_are_stored_once(setup: Setup, database_url: str) -> None:
    rejections: list[Rejection] = []
    tracker = AsyncTracker(
        setup.base_url, setup.ingest_key, tenant_id="acme", on_rejected=rejections.append
    )

    async def record(number: int) -> None:
        for event in range(500):
            await tracker.record("api_calls", 1, user_id=f"task-{number}", org_id=f"{event % 3}")

    await asyncio.gather(*(record(number) for number in range(6)))
    await tracker.record("no_such_meter", 1)
    assert await tracker.close(timeout=60)
    stats = tracker.stats
    assert (stats.recorded, stats.sent, stats.rejected, stats.buffered) == (3001, 3000, 1, 0)
    assert [r.code for r in rejections] == ["unknown_meter"]
    assert await asyncio.to_thread(stored_events, database_url) == (3000, 3000)


async def test_lost_answers_are_retried_and_counted_once(
    setup: Setup, proxy: Proxy, database_url: str
) -> None:
    proxy.after = lambda number, answer: ProxyAction(lose_answer=True) if number == 1 else None
    async with AsyncTracker(
        proxy.base_url, setup.ingest_key, tenant_id="acme", flush_seconds=3600
    ) as tracker:
        keys = {await tracker.record("api_calls", 1) for _ in range(200)}
        assert await tracker.flush(timeout=30)
    assert (tracker.stats.sent, tracker.stats.duplicates, tracker.stats.retries) == (0, 200, 1)
    assert await asyncio.to_thread(stored_keys, database_url) == keys


async def test_retry_after_is_honoured(setup: Setup, proxy: Proxy) -> None:
    proxy.before = lambda number: (
        ProxyAction(status=429, headers={"retry-after": "1"}) if number == 1 else None
    )
    async with AsyncTracker(
        proxy.base_url, setup.ingest_key, tenant_id="acme", flush_seconds=3600
    ) as tracker:
        await tracker.record("api_calls", 1)
        started = time.monotonic()
        assert await tracker.flush(timeout=30)
        assert time.monotonic() - started >= 1.0
    assert (tracker.stats.sent, tracker.stats.retries) == (1, 1)


async def test_drop_oldest_and_block(setup: Setup) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    options = {"tenant_id": "acme", "flush_events": 10**6, "flush_seconds": 3600.0}
    dropping = AsyncTracker(
        nowhere, setup.ingest_key, max_buffered=5, on_full="drop_oldest", **options
    )  # type: ignore[arg-type]
    for _ in range(12):
        await dropping.record("api_calls", 1)
    assert (dropping.stats.dropped, dropping.stats.buffered) == (7, 5)
    assert not await dropping.close(timeout=0.3)
    assert dropping.stats.dropped == 12

    blocking = AsyncTracker(nowhere, setup.ingest_key, max_buffered=5, block_timeout=0.2, **options)  # type: ignore[arg-type]
    for _ in range(5):
        await blocking.record("api_calls", 1)
    with pytest.raises(BufferFull):
        await blocking.record("api_calls", 1)
    assert not await blocking.close(timeout=0.3)
