"""Sums and counts read with signed pieces (a larger range of whole buckets minus what lies
outside the window: `levels.cut_signed`) equal the plain reads, and the plain reads equal the
events: for random events around a month end, folded at random points (some buckets pending,
some folded), over months and days of zones whose midnight is not a UTC midnight."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st

from service.rollups.levels import Grain, cut, cut_signed, grain_end
from service.rollups.query import RollupQuery, read_cells
from tests.rollups.test_fold import batches_and_folds, store_and_fold
from tests.rollups.test_levels import edges

Q = timedelta(minutes=15)
ALL = list(Grain)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def local_edges(zone: str, days: list[tuple[int, int, int]]) -> list[datetime]:
    tz = ZoneInfo(zone)
    return [datetime(*day, tzinfo=tz).astimezone(UTC) for day in days]


def quarters_counted(pieces: list[tuple[Grain | None, datetime, int, int]]) -> Counter[Any]:
    """How many times, with signs, each (window, quarter hour) is counted."""
    counted: Counter[Any] = Counter()
    for grain, start, window, sign in pieces:
        end = start + Q if grain is None else grain_end(grain, start)
        at = start
        while at < end:
            counted[(window, at)] += sign
            at += Q
    return counted


def test_a_berlin_month_is_the_utc_month_plus_an_hour_minus_an_hour() -> None:
    pieces = cut_signed(local_edges("Europe/Berlin", [(2026, 11, 1), (2026, 12, 1)]), ALL)
    assert pieces == [
        (Grain.HOUR, utc(2026, 10, 31, 23), 0, 1),
        (Grain.MONTH, utc(2026, 11, 1), 0, 1),
        (Grain.HOUR, utc(2026, 11, 30, 23), 0, -1),
    ]


def test_without_hours_a_berlin_month_is_the_month_and_eight_quarter_hours() -> None:
    pieces = cut_signed(local_edges("Europe/Berlin", [(2026, 11, 1), (2026, 12, 1)]), [Grain.MONTH])
    assert [(g, s) for g, _, _, s in pieces].count((None, -1)) == 4
    assert [(g, s) for g, _, _, s in pieces].count((None, 1)) == 4
    assert (Grain.MONTH, utc(2026, 11, 1), 0, 1) in pieces


@settings(max_examples=300, deadline=None)
@given(edges=edges(), grains=st.sets(st.sampled_from(ALL)))
def test_signed_pieces_count_every_window_exactly_once(
    edges: list[datetime], grains: set[Grain]
) -> None:
    pieces = cut_signed(edges, grains)
    counted = quarters_counted(pieces)
    expected: Counter[Any] = Counter()
    for window, (start, end) in enumerate(itertools.pairwise(edges)):
        at = start
        while at < end:
            expected[(window, at)] += 1
            at += Q
    assert +counted == expected and -counted == Counter()
    for grain, _, _, _ in pieces:
        assert grain is None or grain in grains
    # Never more pieces than the plain cut.
    plain = cut(edges, grains)
    assert len(pieces) <= len(plain.quarters) + sum(len(s) for s in plain.coarse.values())


ZONES = [
    ("Europe/Berlin", [(2026, 10, 1), (2026, 11, 1), (2026, 12, 1)]),
    ("Europe/Berlin", [(2026, 10, 30), (2026, 10, 31), (2026, 11, 1), (2026, 11, 2)]),
    ("Asia/Kathmandu", [(2026, 10, 31), (2026, 11, 1), (2026, 11, 2)]),
    ("America/St_Johns", [(2026, 10, 1), (2026, 11, 1)]),
]
GROUPS: list[tuple[str, ...]] = [(), ("user_id",), ("api_key_id",), ("user_id", "api_key_id")]


@batches_and_folds(max_examples=12, max_batches=3)
async def test_signed_reads_equal_plain_reads_and_the_events(
    world: dict[str, int],
    pg_pool: asyncpg.Pool,
    batches: list[list[dict[str, Any]]],
    cutoffs: list[int | None],
) -> None:
    stored = await store_and_fold(pg_pool, world, batches, cutoffs)
    meters = [world[name] for name in ("input_tokens", "api_calls")]
    used_signs = False
    async with pg_pool.acquire() as connection:
        for (zone, days), group_by in itertools.product(ZONES, GROUPS):
            edges = local_edges(zone, days)
            plain = RollupQuery("acme", meters, edges, group_by, aggregates=frozenset())
            signed = RollupQuery(
                "acme", meters, edges, group_by, aggregates=frozenset(), sums_only=True
            )
            used_signs |= any(s < 0 for *_, s in cut_signed(edges, ALL))
            (plain_cells, signed_cells) = await read_cells(connection, [plain, signed])
            as_plain = {(c.meter_id, c.window, c.group): (c.sum, c.count) for c in plain_cells}
            as_signed = {(c.meter_id, c.window, c.group): (c.sum, c.count) for c in signed_cells}
            assert as_signed == as_plain, (zone, days, group_by)
            naive: dict[Any, list[Any]] = {}
            for event in stored:
                if event.tenant_id != "acme" or world[event.meter] not in meters:
                    continue
                if not edges[0] <= event.ts < edges[-1]:
                    continue
                window = max(i for i, edge in enumerate(edges) if edge <= event.ts)
                group = tuple(event.attribution.get(key) for key in group_by)
                cell = naive.setdefault((world[event.meter], window, group), [Decimal(0), 0])
                cell[0] += event.value or 0
                cell[1] += 1
            assert as_plain == {key: (total, count) for key, (total, count) in naive.items()}
    assert used_signs
