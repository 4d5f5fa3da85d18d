"""Tracker against a real server: batches, flushing, rejections, retries, and exactly-once
delivery through outages and lost answers."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from metering_client import BufferFull, Rejection, Tracker, TrackerClosed
from tests.clients.conftest import (
    Proxy,
    ProxyAction,
    ServiceProcess,
    Setup,
    stored_events,
    stored_keys,
)
from tests.support.live_server import free_port


def usage_sum(setup: Setup, meter: str = "api_calls") -> Decimal:
    answer = httpx.get(
        f"{setup.base_url}/v1/usage",
        params={
            "tenant_id": setup.tenant_id,
            "meter": meter,
            "from": "2000-01-01T00:00:00Z",
            "to": "2100-01-01T00:00:00Z",
        },
        headers={"Authorization": f"Bearer {setup.read_key}"},
    )
    assert answer.status_code == 200, answer.text
    return sum((Decimal(row["sum"]) for row in answer.json()["rows"]), Decimal(0))


def quiet_tracker(base_url: str, key: str, **options: object) -> Tracker:
    """A tracker that sends only when asked (flush, close) unless options say otherwise."""
    settings: dict[str, object] = {"tenant_id": "acme", "flush_events": 10**6}
    settings["flush_seconds"] = 3600.0
    settings.update(options)
    return Tracker(base_url, key, **settings)  # type: ignore[arg-type]


def test_close_flushes_everything_recorded(setup: Setup, database_url: str) -> None:
    tracker = quiet_tracker(setup.base_url, setup.ingest_key, max_batch=400)
    for number in range(1500):
        tracker.record("api_calls", number % 7, user_id=f"u{number % 3}")
    assert tracker.stats.buffered == 1500  # nothing went out: no threshold was reached
    assert tracker.close(timeout=30)
    stats = tracker.stats
    assert (stats.recorded, stats.sent, stats.duplicates, stats.rejected) == (1500, 1500, 0, 0)
    assert (stats.dropped, stats.buffered) == (0, 0)
    assert stored_events(database_url) == (1500, 1500)
    assert usage_sum(setup) == sum(number % 7 for number in range(1500))
    with pytest.raises(TrackerClosed):
        tracker.record("api_calls", 1)


def test_flushes_by_time_and_by_count(setup: Setup, database_url: str) -> None:
    tracker = Tracker(
        setup.base_url, setup.ingest_key, tenant_id="acme", flush_events=50, flush_seconds=0.3
    )
    try:
        tracker.record("api_calls", 1)
        deadline = time.monotonic() + 10
        while tracker.stats.sent < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tracker.stats.sent == 1, "one event was not sent within flush_seconds"
        for _ in range(50):
            tracker.record("api_calls", 1)
        deadline = time.monotonic() + 10
        while tracker.stats.sent < 51 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tracker.stats.sent == 51
    finally:
        tracker.close(timeout=10)
    assert stored_events(database_url) == (51, 51)


def test_flush_waits_for_the_answers(setup: Setup, database_url: str) -> None:
    tracker = quiet_tracker(setup.base_url, setup.ingest_key)
    keys = [tracker.record("api_calls", 2) for _ in range(120)]
    assert tracker.flush(timeout=30)
    assert tracker.stats.sent == 120
    assert stored_keys(database_url) == set(keys)
    tracker.close()


def test_rejected_events_go_to_the_callback_and_are_not_retried(
    setup: Setup, database_url: str
) -> None:
    rejections: list[Rejection] = []
    tracker = quiet_tracker(setup.base_url, setup.ingest_key, on_rejected=rejections.append)
    at = datetime.now(UTC)  # part of the payload: the same key needs the same time
    tracker.record("api_calls", 1, idempotency_key="k-1", timestamp=at)
    tracker.record("no_such_meter", 1)
    tracker.record("api_calls", -5)
    tracker.record("api_calls", 1, idempotency_key="k-1", timestamp=at)  # a duplicate
    tracker.record("api_calls", 2, idempotency_key="k-1", timestamp=at)  # a conflict
    assert tracker.close(timeout=30)
    stats = tracker.stats
    assert (stats.sent, stats.duplicates, stats.rejected, stats.retries) == (1, 1, 3, 0)
    by_status = sorted((r.status, r.event.event_name, r.event.value) for r in rejections)
    assert by_status == [
        ("conflict", "api_calls", 2),
        ("invalid", "api_calls", -5),
        ("invalid", "no_such_meter", 1),
    ]
    assert all(r.code and r.message for r in rejections)
    assert stored_events(database_url) == (1, 1)


def test_a_refused_request_rejects_its_events_without_retries(setup: Setup) -> None:
    rejections: list[Rejection] = []
    tracker = quiet_tracker(setup.base_url, "not-a-key", on_rejected=rejections.append)
    for _ in range(3):
        tracker.record("api_calls", 1)
    tracker.close(timeout=30)
    assert (tracker.stats.rejected, tracker.stats.retries, tracker.stats.sent) == (3, 0, 0)
    assert {(r.status, r.code) for r in rejections} == {("refused", "unauthorized")}


def test_a_body_over_the_size_limit_is_sent_in_halves(setup: Setup, database_url: str) -> None:
    tracker = quiet_tracker(setup.base_url, setup.ingest_key)
    for number in range(1000):  # about 1.1 MB: over the test server's 500 kB limit
        tracker.record("api_calls", 1, metadata={"note": f"{number:04d}" * 250})
    assert tracker.close(timeout=60)
    assert (tracker.stats.sent, tracker.stats.rejected) == (1000, 0)
    assert stored_events(database_url) == (1000, 1000)


def test_retry_after_is_honoured(setup: Setup, proxy: Proxy, database_url: str) -> None:
    proxy.before = lambda number: (
        ProxyAction(status=503, headers={"retry-after": "1"}) if number == 1 else None
    )
    tracker = quiet_tracker(proxy.base_url, setup.ingest_key)
    tracker.record("api_calls", 1)
    started = time.monotonic()
    assert tracker.flush(timeout=30)
    assert time.monotonic() - started >= 1.0
    assert (tracker.stats.sent, tracker.stats.retries, proxy.requests) == (1, 1, 2)
    tracker.close()


def test_too_many_requests_and_server_errors_are_retried(setup: Setup, proxy: Proxy) -> None:
    statuses = {1: 429, 2: 500, 3: 502}
    proxy.before = lambda number: (
        ProxyAction(status=statuses[number]) if number in statuses else None
    )
    tracker = quiet_tracker(proxy.base_url, setup.ingest_key)
    tracker.record("api_calls", 1)
    assert tracker.flush(timeout=30)
    assert (tracker.stats.sent, tracker.stats.retries) == (1, 3)
    tracker.close()


def test_a_batch_whose_answer_was_lost_is_counted_once(
    setup: Setup, service: ServiceProcess, proxy: Proxy, database_url: str
) -> None:
    """The service commits the batch and dies before answering: the tracker sends the batch
    again once the service is back, and it is stored (and counted) once."""

    def crash_after_commit(number: int, answer: httpx.Response) -> ProxyAction | None:
        if number != 1:
            return None
        assert answer.status_code == 200  # committed
        service.stop()
        threading.Timer(0.5, service.start).start()
        return ProxyAction(lose_answer=True)

    proxy.after = crash_after_commit
    tracker = quiet_tracker(proxy.base_url, setup.ingest_key)
    keys = {tracker.record("api_calls", 1) for _ in range(300)}
    assert tracker.flush(timeout=60), service.log()
    stats = tracker.stats
    assert stats.retries >= 1
    assert (stats.sent, stats.duplicates, stats.rejected, stats.dropped) == (0, 300, 0, 0)
    assert stored_events(database_url) == (300, 300)
    assert stored_keys(database_url) == keys
    assert usage_sum(setup) == 300
    tracker.close()


def test_100k_events_from_8_threads_through_a_restart_are_stored_exactly_once(
    setup: Setup, service: ServiceProcess, database_url: str
) -> None:
    threads, per_thread = 8, 12_500
    tracker = Tracker(setup.base_url, setup.ingest_key, tenant_id="acme")
    halfway = threading.Barrier(threads + 1)
    server_down = threading.Event()

    def record(number: int) -> None:
        for event in range(per_thread):
            if event == per_thread // 2:  # the second half is recorded while the server is down
                halfway.wait()
                server_down.wait()
            tracker.record("api_calls", 1, user_id=f"thread-{number}", org_id=f"e{event % 5}")

    workers = [threading.Thread(target=record, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    halfway.wait()
    service.stop()  # SIGKILL: batches in flight get no answer
    server_down.set()
    time.sleep(5)
    service.start()
    for worker in workers:
        worker.join(60)
    assert tracker.close(timeout=60), service.log()
    stats = tracker.stats
    total = threads * per_thread
    assert stats.recorded == total
    assert stats.retries >= 1, "the outage did not reach the tracker"
    assert (stats.rejected, stats.dropped, stats.buffered) == (0, 0, 0)
    # Batches in flight when the server died may have been committed without an answer:
    # those come back as duplicates, never as a second copy.
    assert stats.sent + stats.duplicates == total
    assert stored_events(database_url) == (total, total)
    assert usage_sum(setup) == total


def test_drop_oldest_counts_what_it_dropped(setup: Setup, database_url: str) -> None:
    tracker = quiet_tracker(
        setup.base_url, setup.ingest_key, max_buffered=100, max_batch=100, on_full="drop_oldest"
    )
    keys = [tracker.record("api_calls", 1) for _ in range(250)]
    assert (tracker.stats.dropped, tracker.stats.buffered) == (150, 100)
    assert tracker.close(timeout=30)
    assert (tracker.stats.sent, tracker.stats.dropped) == (100, 150)
    assert stored_keys(database_url) == set(keys[150:])


def test_block_waits_for_room_then_raises(setup: Setup) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    tracker = quiet_tracker(nowhere, setup.ingest_key, max_buffered=10, block_timeout=0.3)
    for _ in range(10):
        tracker.record("api_calls", 1)
    started = time.monotonic()
    with pytest.raises(BufferFull):
        tracker.record("api_calls", 1)
    assert time.monotonic() - started >= 0.3
    assert not tracker.close(timeout=0.5)
    assert tracker.stats.dropped == 10


def test_retries_stop_after_max_retry_seconds(setup: Setup) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    tracker = quiet_tracker(nowhere, setup.ingest_key, max_retry_seconds=1)
    tracker.record("api_calls", 1)
    tracker.record("api_calls", 1)
    assert tracker.flush(timeout=20)  # answered for: given up
    assert (tracker.stats.dropped, tracker.stats.sent) == (2, 0)
    assert tracker.stats.retries >= 1
    tracker.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_sends_with_its_own_worker(setup: Setup, database_url: str) -> None:
    tracker = quiet_tracker(setup.base_url, setup.ingest_key)
    parent_key = tracker.record("api_calls", 1)  # buffered in the parent when it forks
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            child_key = tracker.record("api_calls", 10, idempotency_key="from-the-child")
            closed = tracker.close(timeout=20)
            stats = tracker.stats
            code = 0 if closed and child_key and (stats.recorded, stats.sent) == (1, 1) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tracker.close(timeout=20)
    assert (tracker.stats.recorded, tracker.stats.sent) == (1, 1)
    assert stored_keys(database_url) == {parent_key, "from-the-child"}
    assert usage_sum(setup) == 11
