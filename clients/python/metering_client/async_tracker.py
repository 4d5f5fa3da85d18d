"""AsyncTracker: the Tracker for asyncio services, with sender tasks on the event loop instead
of threads. Same buffering, batching, retries and counters; use it from one event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

import httpx

from metering_client._buffer import Answer, BufferedTracker, next_step, reply_of
from metering_client._delivery import ABANDON, BATCH_PATH, Post
from metering_client._events import Event


class AsyncTracker(BufferedTracker[Coroutine[Any, Any, str]]):
    """`await tracker.record(...)` buffers an event (waiting only for room in the buffer, with
    on_full="block"); sender tasks deliver batches. `await tracker.close()` (or `async with`)
    before the loop ends: there is no exit hook, the loop is gone by then."""

    _abandon: asyncio.Event

    def _reset(self) -> None:
        self._abandon = asyncio.Event()
        self._changed = asyncio.Condition()  # anything a sender, record or flush waits on
        self._senders: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None
        super()._reset()

    async def _submit(self, event: Event) -> str:
        async with self._changed:
            self._check_open()
            if not self._senders:
                self._start()
            if self._full():
                await self._make_room()
            if self._append(event):
                self._changed.notify_all()
        return event.idempotency_key

    async def _make_room(self) -> None:
        options = self.options
        if options.on_full == "drop_oldest":
            self._drop_oldest()
            return

        def has_room() -> bool:
            return self._closed or not self._full()

        try:
            await asyncio.wait_for(self._changed.wait_for(has_room), options.block_timeout)
        except TimeoutError:
            raise self._buffer_full() from None
        self._check_open()

    def _start(self) -> None:
        self._http = httpx.AsyncClient(**self._http_settings())
        self._senders = [asyncio.create_task(self._send_loop()) for _ in range(self.max_in_flight)]

    async def _send_loop(self) -> None:
        while True:
            async with self._changed:
                while not self._due():
                    if self._stopped():
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), self._idle_wait())
                if self._abandon.is_set():
                    return
                first, batch = self._take_batch()
                self._changed.notify_all()
            try:
                await self._deliver(batch)
            except Exception:
                self._batch_failed(batch)
            finally:
                async with self._changed:
                    self._finish_batch(first)
                    self._changed.notify_all()

    async def _deliver(self, batch: list[Event]) -> None:
        steps = self._delivery(batch)
        answer: Answer = None
        while (step := next_step(steps, answer)) is not None:
            if isinstance(step, Post):
                answer = await self._post(step.body)
            else:
                answer = await self._sleep(step.seconds)

    async def _post(self, body: bytes) -> Answer:
        """POST one batch: the reply, or the exception the request raised."""
        assert self._http is not None
        try:
            return reply_of(await self._http.post(BATCH_PATH, content=body))
        except httpx.HTTPError as exc:
            return exc

    async def _sleep(self, seconds: float) -> Answer:
        """Wait `seconds`; ABANDON when close() runs out of time meanwhile."""
        try:
            await asyncio.wait_for(self._abandon.wait(), seconds)
        except TimeoutError:
            return None
        return ABANDON

    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (as Tracker's)
        """Send every event recorded before this call now and wait (at most `timeout`
        seconds) until all were answered; True when they were."""
        async with self._changed:
            through = self._due_through()
            self._changed.notify_all()

            def done() -> bool:
                return self._abandon.is_set() or self._flushed(through)

            try:
                await asyncio.wait_for(self._changed.wait_for(done), timeout)
            except TimeoutError:
                return False
            return not self._abandon.is_set()

    async def close(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (as Tracker's)
        """Stop taking events, deliver the buffered ones (at most `timeout` seconds; the rest
        are counted as dropped) and stop the senders. True when everything was delivered."""
        async with self._changed:
            if not self._start_closing():
                return True
            self._changed.notify_all()
        delivered = await self.flush(timeout)
        if not delivered:
            self._abandon.set()
            async with self._changed:
                lost = self._discard_buffered()
                self._changed.notify_all()
            self._count_lost(lost)
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
