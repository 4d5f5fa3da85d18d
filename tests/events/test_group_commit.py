"""The group committer on its own: coalescing, per-item results, failures reach every caller."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from service.events.group_commit import GroupCommitter


async def test_concurrent_submissions_share_one_flush() -> None:
    groups: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        groups.append(list(items))
        await asyncio.sleep(0.01)
        return [i * 10 for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(
        flush, window_seconds=0.02, max_items=100, flushers=1
    )
    results = await asyncio.gather(*(committer.submit(i) for i in range(50)))
    assert results == [i * 10 for i in range(50)]
    assert sum(len(g) for g in groups) == 50
    assert len(groups) <= 2, groups  # coalesced, not one flush per item
    await committer.close()


async def test_groups_are_capped_at_max_items() -> None:
    sizes: list[int] = []

    async def flush(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(
        flush, window_seconds=0.05, max_items=8, flushers=2
    )
    assert await asyncio.gather(*(committer.submit(i) for i in range(40))) == list(range(40))
    assert max(sizes) <= 8 and sum(sizes) == 40
    await committer.close()


async def test_a_failed_flush_fails_every_caller_of_that_group() -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        raise ConnectionError("database went away")

    committer: GroupCommitter[int, int] = GroupCommitter(flush, window_seconds=0.01, max_items=10)
    results = await asyncio.gather(*(committer.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    await committer.close()
    with pytest.raises(RuntimeError):
        await committer.submit(1)


async def test_close_waits_for_pending_items() -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        await asyncio.sleep(0.02)
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(flush, window_seconds=0.01, max_items=4)
    pending = [asyncio.ensure_future(committer.submit(i)) for i in range(10)]
    await asyncio.sleep(0)
    await committer.close()
    assert [p.result() for p in pending] == list(range(10))
