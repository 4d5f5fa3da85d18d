"""Tracker: buffers events in memory and sends them in batches from background threads.

`record*` never waits for the network: it builds the event (its idempotency key is made
there) and appends it to a bounded buffer. Sender threads take batches of up to `max_batch`
events when `flush_events` are waiting, when the oldest has waited `flush_seconds`, or when
`flush()` or `close()` asks, and deliver them with retries (see `_delivery`)."""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from types import TracebackType

import httpx

from metering_client._buffer import Answer, BufferedTracker, next_step, reply_of
from metering_client._delivery import ABANDON, BATCH_PATH, Post
from metering_client._events import Event

_LIVE: weakref.WeakSet[Tracker] = weakref.WeakSet()


class Tracker(BufferedTracker[str]):
    """Thread-safe and fork-safe buffered sender of usage events.

    ```python
    tracker = Tracker("https://metering.example.com", api_key, tenant_id="acme")
    tracker.record("api_calls", 1, user_id="u-1")
    tracker.close()  # flushes; also run at interpreter exit
    ```
    """

    # How long the exit hook lets close() deliver what is buffered.
    atexit_timeout = 30.0

    _abandon: threading.Event

    def _opened(self) -> None:
        _LIVE.add(self)
        atexit.register(_close_at_exit, weakref.ref(self))

    def _reset(self) -> None:
        """Fresh state: at start, and in a forked child (whose copies of the parent's locks may
        be held by threads that do not exist there; the parent delivers its own buffer)."""
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # senders wait for a batch to take
        self._room = threading.Condition(self._lock)  # blocked record() waits for space
        self._progress = threading.Condition(self._lock)  # flush() waits for batches
        self._abandon = threading.Event()
        self._senders: list[threading.Thread] = []
        self._http: httpx.Client | None = None
        super()._reset()

    # -- recording

    def _submit(self, event: Event) -> str:
        with self._lock:
            self._check_open()
            if not self._senders:
                self._start()
            if self._full():
                self._make_room()
            if self._append(event):
                self._work.notify()
        return event.idempotency_key

    def _make_room(self) -> None:
        options = self.options
        if options.on_full == "drop_oldest":
            self._drop_oldest()
            return
        deadline = (
            None if options.block_timeout is None else time.monotonic() + options.block_timeout
        )
        while self._full():
            self._check_open()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise self._buffer_full()
            self._room.wait(remaining)

    # -- sending

    def _start(self) -> None:
        self._http = httpx.Client(**self._http_settings())
        for number in range(self.max_in_flight):
            sender = threading.Thread(
                target=self._send_loop, name=f"metering-sender-{number}", daemon=True
            )
            self._senders.append(sender)
            sender.start()

    def _send_loop(self) -> None:
        while True:
            with self._lock:
                while not self._due():
                    if self._stopped():
                        return
                    self._work.wait(self._idle_wait())
                if self._abandon.is_set():
                    return
                first, batch = self._take_batch()
                if self._due():
                    self._work.notify()
                self._room.notify_all()
            try:
                self._deliver(batch)
            except Exception:
                self._batch_failed(batch)
            finally:
                with self._lock:
                    self._finish_batch(first)
                    self._progress.notify_all()

    def _deliver(self, batch: list[Event]) -> None:
        steps = self._delivery(batch)
        answer: Answer = None
        while (step := next_step(steps, answer)) is not None:
            if isinstance(step, Post):
                answer = self._post(step.body)
            else:
                answer = ABANDON if self._abandon.wait(step.seconds) else None

    def _post(self, body: bytes) -> Answer:
        """POST one batch: the reply, or the exception the request raised."""
        assert self._http is not None
        try:
            return reply_of(self._http.post(BATCH_PATH, content=body))
        except httpx.HTTPError as exc:
            return exc

    # -- flushing and closing

    def flush(self, timeout: float | None = None) -> bool:
        """Send every event recorded before this call now; wait until the service has
        answered for all of them (or they were given up), at most `timeout` seconds. True when
        all were answered."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            through = self._due_through()
            self._work.notify_all()
            while not self._flushed(through):
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
            if not self._start_closing():
                return True
            self._work.notify_all()
            self._room.notify_all()
        started = time.monotonic()
        delivered = self.flush(timeout)
        if not delivered:
            self._abandon.set()
            with self._lock:
                lost = self._discard_buffered()
                self._work.notify_all()
            self._count_lost(lost)
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

    def _sizes(self) -> tuple[int, int]:
        with self._lock:
            return super()._sizes()

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
