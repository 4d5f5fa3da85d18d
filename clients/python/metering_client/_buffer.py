"""What the threaded Tracker and the AsyncTracker share: the options, the buffer of recorded
events and its bookkeeping, when a batch is due, and how a batch's requests are made. The two
differ only in how they wait (locks and threads, or one condition and tasks) and in their
I/O, so those stay in the subclasses; every method here that touches the buffer expects the
caller to hold the tracker's lock (Tracker) or condition (AsyncTracker)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Generator
from typing import Any, Protocol, TypeVar, Unpack

import httpx

from metering_client._delivery import (
    Counters,
    Options,
    Reply,
    Step,
    TrackerOptions,
    TrackerStats,
    deliver,
)
from metering_client._events import Event, EventFactory
from metering_client._recording import Recording
from metering_client.errors import BufferFull, TrackerClosed

logger = logging.getLogger("metering_client")

R = TypeVar("R")

# What a delivery step is answered with: a Reply, the exception a request raised, ABANDON or
# None (after a Sleep).
Answer = Reply | BaseException | object | None


class _Flag(Protocol):
    def is_set(self) -> bool: ...


class BufferedTracker(Recording[R]):
    _abandon: _Flag  # set when close() runs out of time: senders stop, sleeps end

    # Batches in flight at once: the service ingests concurrent batches in parallel, and one
    # batch at a time leaves its workers idle during each round trip.
    max_in_flight = 4
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
        self._opened()

    def _reset(self) -> None:
        """An empty buffer and fresh counters (subclasses add their locks, senders and HTTP
        client)."""
        self._buffer: deque[Event] = deque()
        self._recorded = 0  # events ever buffered
        self._taken = 0  # events ever removed from the buffer's head (batched or dropped)
        self._in_flight: dict[int, int] = {}  # first event number of a batch -> its size
        self._flush_through = 0  # events up to this number are due now (flush, close)
        self._waiting_since = 0.0  # when the oldest buffered event was buffered
        self._closing = False
        self._counters = Counters()

    def _opened(self) -> None:
        """Called once, at the end of __init__ (Tracker registers its exit and fork hooks)."""

    # -- recording

    def _check_open(self) -> None:
        if self._closed:
            raise TrackerClosed("the tracker is closed")

    def _full(self) -> bool:
        return len(self._buffer) >= self.options.max_buffered

    def _append(self, event: Event) -> bool:
        """Buffer `event`; True when a sender should wake: the buffer was empty (the oldest
        event's wait of flush_seconds starts now) or now holds flush_events."""
        self._buffer.append(event)
        self._recorded += 1
        size = len(self._buffer)
        if size == 1:
            self._waiting_since = time.monotonic()
        return size == 1 or size == self.options.flush_events

    def _drop_oldest(self) -> None:
        """on_full="drop_oldest": make room by losing the oldest event, logged now and then."""
        self._buffer.popleft()
        self._taken += 1
        self._counters.add(dropped=1)
        dropped = self._counters.dropped
        if dropped == 1 or dropped % 10_000 == 0:
            logger.warning("metering: buffer full, dropped the oldest event (%d so far)", dropped)

    def _buffer_full(self) -> BufferFull:
        """The error of a record that waited block_timeout for room in vain."""
        return BufferFull(
            f"{len(self._buffer)} events buffered for {self.options.block_timeout} s: "
            "is the metering service reachable?"
        )

    # -- sending

    def _http_settings(self) -> dict[str, Any]:
        """The HTTP client's settings, alike for httpx.Client and httpx.AsyncClient."""
        return {
            "base_url": self.options.base_url,
            "headers": self.options.headers,
            "timeout": self.request_timeout,
            "limits": httpx.Limits(max_connections=self.max_in_flight),
        }

    def _stopped(self) -> bool:
        """Whether a sender is done: the tracker gave up, or closed with nothing left."""
        return self._abandon.is_set() or (self._closing and not self._buffer)

    def _idle_wait(self) -> float | None:
        """How long a sender may wait before the oldest buffered event is due (None: nothing
        is buffered, wait to be woken)."""
        if not self._buffer:
            return None
        return self._waiting_since + self.options.flush_seconds - time.monotonic()

    def _due(self) -> bool:
        size = len(self._buffer)
        return size > 0 and (
            size >= self.options.flush_events
            or self._closing
            or self._taken < self._flush_through
            or time.monotonic() - self._waiting_since >= self.options.flush_seconds
        )

    def _take_batch(self) -> tuple[int, list[Event]]:
        """Remove the next batch (at most max_batch events) from the buffer's head and mark it
        in flight; returns the number of its first event, which `_finish_batch` is given."""
        count = min(len(self._buffer), self.options.max_batch)
        batch = [self._buffer.popleft() for _ in range(count)]
        first = self._taken
        self._taken += count
        self._in_flight[first] = count
        if self._buffer:
            self._waiting_since = time.monotonic()
        return first, batch

    def _finish_batch(self, first: int) -> None:
        del self._in_flight[first]

    def _batch_failed(self, batch: list[Event]) -> None:
        """A bug in delivery must not silently stop a sender: log it, count the batch lost."""
        logger.exception("metering: delivering a batch failed")
        self._counters.add(dropped=len(batch))

    def _delivery(self, batch: list[Event]) -> Generator[Step, Answer, None]:
        return deliver(batch, self.options, self._counters)

    # -- flushing and closing

    def _due_through(self) -> int:
        """Make every event recorded so far due now; returns how many that is."""
        through = self._recorded
        self._flush_through = max(self._flush_through, through)
        return through

    def _flushed(self, through: int) -> bool:
        """Whether the first `through` events were all answered (or given up)."""
        return self._taken >= through and all(first >= through for first in self._in_flight)

    def _start_closing(self) -> bool:
        """Stop taking events; False when the tracker was closed already."""
        if self._closed:
            return False
        self._closed = True
        self._closing = True
        return True

    def _discard_buffered(self) -> int:
        """Give up the events still buffered when close runs out of time; returns how many."""
        lost = len(self._buffer)
        self._buffer.clear()
        self._taken += lost
        return lost

    def _count_lost(self, lost: int) -> None:
        if lost:
            self._counters.add(dropped=lost)
            logger.error("metering: closed with %d events not delivered", lost)

    def _sizes(self) -> tuple[int, int]:
        """How many events were recorded and how many are buffered (Tracker reads them under
        its lock)."""
        return self._recorded, len(self._buffer)

    @property
    def stats(self) -> TrackerStats:
        """A snapshot of the counters."""
        recorded, buffered = self._sizes()
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


def next_step(steps: Generator[Step, Answer, None], answer: Answer) -> Step | None:
    """The delivery's next step once `answer` is sent back; None when the batch is done."""
    try:
        return steps.send(answer)
    except StopIteration:
        return None


def reply_of(response: httpx.Response) -> Reply:
    return Reply(response.status_code, response.headers, response.content)
