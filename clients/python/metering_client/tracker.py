"""Tracker: buffers events in memory and sends them in batches from background threads.

`record*` never waits for the network: it builds the event (its idempotency key is made
there) and appends it to a bounded buffer. Sender threads take batches of up to `max_batch`
events when `flush_events` are waiting, when the oldest has waited `flush_seconds`, or when
`flush()` or `close()` asks, and deliver them with retries (see `_delivery`)."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from types import TracebackType
from typing import Unpack

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

_LIVE: weakref.WeakSet[Tracker] = weakref.WeakSet()


class Tracker(Recording[str]):
    """Thread-safe and fork-safe buffered sender of usage events.

    ```python
    tracker = Tracker("https://metering.example.com", api_key, tenant_id="acme")
    tracker.record("api_calls", 1, user_id="u-1")
    tracker.close()  # flushes; also run at interpreter exit
    ```
    """

    # Batches in flight at once: the service ingests concurrent batches in parallel, and one
    # batch at a time leaves its workers idle during each round trip.
    max_in_flight = 4
    # How long the exit hook lets close() deliver what is buffered.
    atexit_timeout = 30.0
    # One request's limits; a slow answer is retried like a lost one.
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
        self._closed = False
        self._reset()
        _LIVE.add(self)
        atexit.register(_close_at_exit, weakref.ref(self))

    def _reset(self) -> None:
        """Fresh state: at start, and in a forked child (whose copies of the parent's locks may
        be held by threads that do not exist there; the parent delivers its own buffer)."""
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # senders wait for a batch to take
        self._room = threading.Condition(self._lock)  # blocked record() waits for space
        self._progress = threading.Condition(self._lock)  # flush() waits for batches
        self._buffer: deque[Event] = deque()
        self._recorded = 0  # events ever buffered
        self._taken = 0  # events ever removed from the buffer's head (batched or dropped)
        self._in_flight: dict[int, int] = {}  # first event number of a batch -> its size
        self._flush_through = 0  # events up to this number are due now (flush, close)
        self._waiting_since = 0.0  # when the oldest buffered event was buffered
        self._closing = False
        self._abandon = threading.Event()
        self._senders: list[threading.Thread] = []
        self._http: httpx.Client | None = None
        self._counters = Counters()

    # -- recording

    def _submit(self, event: Event) -> str:
        options = self.options
        with self._lock:
            if self._closed:
                raise TrackerClosed("the tracker is closed")
            if not self._senders:
                self._start()
            if len(self._buffer) >= options.max_buffered:
                self._make_room()
            self._buffer.append(event)
            self._recorded += 1
            size = len(self._buffer)
            if size == 1:
                self._waiting_since = time.monotonic()
                self._work.notify()
            elif size == options.flush_events:
                self._work.notify()
        return event.idempotency_key

    def _make_room(self) -> None:
        options = self.options
        if options.on_full == "drop_oldest":
            self._buffer.popleft()
            self._taken += 1
            self._counters.add(dropped=1)
            dropped = self._counters.dropped
            if dropped == 1 or dropped % 10_000 == 0:
                logger.warning(
                    "metering: buffer full, dropped the oldest event (%d so far)", dropped
                )
            return
        deadline = (
            None if options.block_timeout is None else time.monotonic() + options.block_timeout
        )
        while len(self._buffer) >= options.max_buffered:
            if self._closed:
                raise TrackerClosed("the tracker is closed")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise BufferFull(
                    f"{len(self._buffer)} events buffered for {options.block_timeout} s: "
                    "is the metering service reachable?"
                )
            self._room.wait(remaining)

    # -- sending

    def _start(self) -> None:
        self._http = httpx.Client(
            base_url=self.options.base_url,
            headers=self.options.headers,
            timeout=self.request_timeout,
            limits=httpx.Limits(max_connections=self.max_in_flight),
        )
        for number in range(self.max_in_flight):
            sender = threading.Thread(
                target=self._send_loop, name=f"metering-sender-{number}", daemon=True
            )
            self._senders.append(sender)
            sender.start()

    def _due(self) -> bool:
        size = len(self._buffer)
        return size > 0 and (
            size >= self.options.flush_events
            or self._closing
            or self._taken < self._flush_through
            or time.monotonic() - self._waiting_since >= self.options.flush_seconds
        )

    def _send_loop(self) -> None:
        while True:
            with self._lock:
                while not self._due():
                    if self._abandon.is_set() or (self._closing and not self._buffer):
                        return
                    wait = None
                    if self._buffer:
                        wait = self._waiting_since + self.options.flush_seconds - time.monotonic()
                    self._work.wait(wait)
                if self._abandon.is_set():
                    return
                count = min(len(self._buffer), self.options.max_batch)
                batch = [self._buffer.popleft() for _ in range(count)]
                first = self._taken
                self._taken += count
                self._in_flight[first] = count
                if self._buffer:
                    self._waiting_since = time.monotonic()
                    if self._due():
                        self._work.notify()
                self._room.notify_all()
            try:
                self._deliver(batch)
            except Exception:  # a bug must not silently stop a sender
                logger.exception("metering: delivering a batch failed")
                self._counters.add(dropped=count)
            finally:
                with self._lock:
                    del self._in_flight[first]
                    self._progress.notify_all()

    def _deliver(self, batch: list[Event]) -> None:
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
                    answer = http.post(BATCH_PATH, content=step.body)
                    reply = Reply(answer.status_code, answer.headers, answer.content)
                except httpx.HTTPError as exc:
                    reply = exc
            else:
                reply = ABANDON if self._abandon.wait(step.seconds) else None

    # -- flushing and closing

    def flush(self, timeout: float | None = None) -> bool:
        """Send every event recorded before this call now; wait until the service has
        answered for all of them (or they were given up), at most `timeout` seconds. True when
        all were answered."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            through = self._recorded
            self._flush_through = max(self._flush_through, through)
            self._work.notify_all()
            while self._taken < through or any(first < through for first in self._in_flight):
                if not self._senders or self._abandon.is_set():
                    return False
                remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                self._progress.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Stop taking events, deliver the buffered ones (at most `timeout` seconds; events
        still undelivered then are counted as dropped) and stop the senders. True when
        everything was delivered. Closing twice does nothing."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            self._closing = True
            self._work.notify_all()
            self._room.notify_all()
        started = time.monotonic()
        delivered = self.flush(timeout)
        if not delivered:
            self._abandon.set()
            with self._lock:
                lost = len(self._buffer)
                self._buffer.clear()
                self._taken += lost
                self._work.notify_all()
            if lost:
                self._counters.add(dropped=lost)
                logger.error("metering: closed with %d events not delivered", lost)
        for sender in self._senders:
            # A request in flight when out of time runs into its own timeout; the threads are
            # daemons, so they never hold up the interpreter's exit.
            left = None if timeout is None else max(0.1, timeout - (time.monotonic() - started))
            sender.join(left)
        if self._http is not None:
            self._http.close()
        return delivered

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def stats(self) -> TrackerStats:
        """A snapshot of the counters."""
        with self._lock:
            buffered = len(self._buffer)
            recorded = self._recorded
        counters = self._counters
        with counters.lock:
            return TrackerStats(
                recorded=recorded,
                sent=counters.sent,
                duplicates=counters.duplicates,
                rejected=counters.rejected,
                dropped=counters.dropped,
                retries=counters.retries,
                buffered=buffered,
            )

    def _after_fork_in_child(self) -> None:
        self._reset()


def _close_at_exit(ref: weakref.ref[Tracker]) -> None:
    tracker = ref()
    if tracker is not None:
        tracker.close(tracker.atexit_timeout)


def _reset_in_child() -> None:
    for tracker in list(_LIVE):
        tracker._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
