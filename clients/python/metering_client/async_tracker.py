"""AsyncTracker: the Tracker for asyncio services, with sender tasks on the event loop instead
of threads. Same buffering, batching, retries and counters; use it from one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Unpack

import httpx

from metering_client._delivery import (
    ABANDON,
    BATCH_PATH,
    Counters,
    Options,
    Post,
    Reply,
    TrackerOptions,
    TrackerStats,
    deliver,
)
from metering_client._events import Event, EventFactory
from metering_client._recording import Recording
from metering_client.errors import BufferFull, TrackerClosed

logger = logging.getLogger("metering_client")


class AsyncTracker(Recording[Coroutine[Any, Any, str]]):
    """`await tracker.record(...)` buffers an event (waiting only for room in the buffer, with
    on_full="block"); sender tasks deliver batches. `await tracker.close()` (or `async with`)
    before the loop ends: there is no exit hook, the loop is gone by then."""

    max_in_flight = 4
    request_timeout = httpx.Timeout(30.0, connect=5.0)

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        tenant_id: str | None = None,
        **options: Unpack[TrackerOptions],
    ) -> None:
        self.options = Options(base_url=base_url.rstrip("/"), api_key=api_key, **options)
        self._events = EventFactory(tenant_id)
        self._buffer: deque[Event] = deque()
        self._recorded = 0
        self._taken = 0
        self._in_flight: dict[int, int] = {}
        self._flush_through = 0
        self._waiting_since = 0.0
        self._closed = False
        self._closing = False
        self._abandon = asyncio.Event()
        self._changed = asyncio.Condition()  # anything a sender, record or flush waits on
        self._senders: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None
        self._counters = Counters()

    async def _submit(self, event: Event) -> str:
        options = self.options
        async with self._changed:
            if self._closed:
                raise TrackerClosed("the tracker is closed")
            if not self._senders:
                self._start()
            if len(self._buffer) >= options.max_buffered:
                await self._make_room()
            self._buffer.append(event)
            self._recorded += 1
            size = len(self._buffer)
            if size == 1:
                self._waiting_since = time.monotonic()
                self._changed.notify_all()
            elif size == options.flush_events:
                self._changed.notify_all()
        return event.idempotency_key

    async def _make_room(self) -> None:
        options = self.options
        if options.on_full == "drop_oldest":
            self._buffer.popleft()
            self._taken += 1
            self._counters.add(dropped=1)
            if self._counters.dropped == 1 or self._counters.dropped % 10_000 == 0:
                logger.warning(
                    "metering: buffer full, dropped the oldest event (%d so far)",
                    self._counters.dropped,
                )
            return

        def has_room() -> bool:
            return self._closed or len(self._buffer) < options.max_buffered

        try:
            await asyncio.wait_for(self._changed.wait_for(has_room), options.block_timeout)
        except TimeoutError:
            raise BufferFull(
                f"{len(self._buffer)} events buffered for {options.block_timeout} s: "
                "is the metering service reachable?"
            ) from None
        if self._closed:
            raise TrackerClosed("the tracker is closed")

    def _start(self) -> None:
        self._http = httpx.AsyncClient(
            base_url=self.options.base_url,
            headers=self.options.headers,
            timeout=self.request_timeout,
            limits=httpx.Limits(max_connections=self.max_in_flight),
        )
        self._senders = [asyncio.create_task(self._send_loop()) for _ in range(self.max_in_flight)]

    def _due(self) -> bool:
        size = len(self._buffer)
        return size > 0 and (
            size >= self.options.flush_events
            or self._closing
            or self._taken < self._flush_through
            or time.monotonic() - self._waiting_since >= self.options.flush_seconds
        )

    async def _send_loop(self) -> None:
        while True:
            async with self._changed:
                while not self._due():
                    if self._abandon.is_set() or (self._closing and not self._buffer):
                        return
                    wait = None
                    if self._buffer:
                        wait = self._waiting_since + self.options.flush_seconds - time.monotonic()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), wait)
                if self._abandon.is_set():
                    return
                count = min(len(self._buffer), self.options.max_batch)
                batch = [self._buffer.popleft() for _ in range(count)]
                first = self._taken
                self._taken += count
                self._in_flight[first] = count
                if self._buffer:
                    self._waiting_since = time.monotonic()
                self._changed.notify_all()
            try:
                await self._deliver(batch)
            except Exception:
                logger.exception("metering: delivering a batch failed")
                self._counters.add(dropped=count)
            finally:
                async with self._changed:
                    del self._in_flight[first]
                    self._changed.notify_all()

    async def _deliver(self, batch: list[Event]) -> None:
        http = self._http
        assert http is not None
        steps = deliver(batch, self.options, self._counters)
        reply: Reply | BaseException | object | None = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration:
                return
            if isinstance(step, Post):
                try:
                    answer = await http.post(BATCH_PATH, content=step.body)
                    reply = Reply(answer.status_code, answer.headers, answer.content)
                except httpx.HTTPError as exc:
                    reply = exc
            else:
                try:
                    await asyncio.wait_for(self._abandon.wait(), step.seconds)
                    reply = ABANDON
                except TimeoutError:
                    reply = None

    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (as Tracker's)
        """Send every event recorded before this call now and wait (at most `timeout`
        seconds) until all were answered; True when they were."""
        async with self._changed:
            through = self._recorded
            self._flush_through = max(self._flush_through, through)
            self._changed.notify_all()

            def done() -> bool:
                return self._abandon.is_set() or (
                    self._taken >= through and all(first >= through for first in self._in_flight)
                )

            try:
                await asyncio.wait_for(self._changed.wait_for(done), timeout)
            except TimeoutError:
                return False
            return not self._abandon.is_set()

    async def close(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (as Tracker's)
        """Stop taking events, deliver the buffered ones (at most `timeout` seconds; the rest
        are counted as dropped) and stop the senders. True when everything was delivered."""
        async with self._changed:
            if self._closed:
                return True
            self._closed = True
            self._closing = True
            self._changed.notify_all()
        delivered = await self.flush(timeout)
        if not delivered:
            self._abandon.set()
            async with self._changed:
                lost = len(self._buffer)
                self._buffer.clear()
                self._taken += lost
                self._changed.notify_all()
            if lost:
                self._counters.add(dropped=lost)
                logger.error("metering: closed with %d events not delivered", lost)
        for sender in self._senders:
            with contextlib.suppress(TimeoutError):  # wait_for cancelled it
                await asyncio.wait_for(sender, None if delivered else 5.0)
        if self._http is not None:
            await self._http.aclose()
        return delivered

    async def __aenter__(self) -> AsyncTracker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def stats(self) -> TrackerStats:
        counters = self._counters
        with counters.lock:
            return TrackerStats(
                recorded=self._recorded,
                sent=counters.sent,
                duplicates=counters.duplicates,
                rejected=counters.rejected,
                dropped=counters.dropped,
                retries=counters.retries,
                buffered=len(self._buffer),
            )
