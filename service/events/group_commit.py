"""Group commit: single-event requests arriving together in one process are coalesced into one
statement and one commit, and each request is answered with its own result only after that
commit. Throughput is then bound by commits per second times events per commit, not by one
round trip per event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from service.common.metrics import GROUP_COMMIT_SIZE

Item = TypeVar("Item")
Result = TypeVar("Result")
Flush = Callable[[Sequence[Item]], Awaitable[Sequence[Result]]]


class GroupCommitter(Generic[Item, Result]):
    """Collects items for up to `window_seconds` (or until `max_items`), then hands them to
    `flush` as one group. Up to `flushers` groups are in flight at once, so a new group forms
    while the previous one commits."""

    def __init__(
        self,
        flush: Flush[Item, Result],
        *,
        window_seconds: float,
        max_items: int,
        flushers: int = 2,
    ) -> None:
        self._flush = flush
        self._window = window_seconds
        self._max = max_items
        self._flushers = flushers
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._wakeup: asyncio.Event | None = None
        self._full = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def submit(self, item: Item) -> Result:
        if self._closed:
            raise RuntimeError("the group committer is closed")
        if not self._tasks:
            self._start()
        assert self._wakeup is not None
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        if len(self._pending) >= self._max:
            self._full.set()
        return await future

    def _start(self) -> None:
        self._wakeup = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self._flushers)]

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            if not self._pending:
                self._wakeup.clear()
                continue
            if len(self._pending) < self._max and self._window > 0:
                # Wait for more requests to join, but never longer than the window.
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._window)
            group = self._pending[: self._max]
            del self._pending[: self._max]
            if not self._pending:
                self._wakeup.clear()
            if not group:
                continue
            GROUP_COMMIT_SIZE.observe(len(group))
            try:
                results = await self._flush([item for item, _ in group])
            except asyncio.CancelledError:
                for _, future in group:
                    future.cancel()
                raise
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        """Flush what is pending, then stop the flush tasks."""
        self._closed = True
        if self._tasks and self._pending:
            await asyncio.gather(*(f for _, f in self._pending), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
