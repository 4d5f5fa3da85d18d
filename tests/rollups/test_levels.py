"""How a range is cut into month, day, six-hour, three-hour, hour and quarter-hour pieces, and
which projection of each level answers a query (pure: no database)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from service.rollups.levels import (
    API_KEY,
    DIMENSIONS,
    FULL,
    MODEL,
    PROJECTIONS,
    USER,
    Grain,
    cut,
    grain_end,
    grain_start,
    needed_bits,
    projection_for,
)

Q = timedelta(minutes=15)
H = timedelta(hours=1)
ALL = list(Grain)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_a_utc_month_is_one_month_bucket() -> None:
    pieces = cut([utc(2026, 11, 1), utc(2026, 12, 1)], ALL)
    assert pieces.coarse[Grain.MONTH] == [utc(2026, 11, 1)]
    assert pieces.coarse[Grain.DAY] == [] and pieces.coarse[Grain.HOUR] == []
    assert pieces.quarters == []


def test_a_berlin_month_is_an_hour_29_days_and_23_hours_in_blocks() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 11, 1, tzinfo=berlin).astimezone(UTC)  # 2026-10-31T23:00Z
    end = datetime(2026, 12, 1, tzinfo=berlin).astimezone(UTC)  # 2026-11-30T23:00Z
    pieces = cut([start, end], ALL)
    assert pieces.coarse[Grain.MONTH] == []
    assert pieces.coarse[Grain.DAY] == [utc(2026, 11, d) for d in range(1, 30)]
    # The last 23 hours: six-hour blocks at 00, 06 and 12, a three-hour block at 18, hours.
    assert pieces.coarse[Grain.HOURS_6] == [utc(2026, 11, 30, h) for h in (0, 6, 12)]
    assert pieces.coarse[Grain.HOURS_3] == [utc(2026, 11, 30, 18)]
    assert pieces.coarse[Grain.HOUR] == [
        utc(2026, 10, 31, 23),
        utc(2026, 11, 30, 21),
        utc(2026, 11, 30, 22),
    ]
    assert pieces.quarters == []


def test_a_berlin_summer_day_is_seven_pieces() -> None:
    pieces = cut([utc(2026, 7, 1, 22), utc(2026, 7, 2, 22)], ALL)  # 00:00 to 00:00 CEST
    assert pieces.coarse[Grain.HOUR] == [
        utc(2026, 7, 1, 22),
        utc(2026, 7, 1, 23),
        utc(2026, 7, 2, 21),
    ]
    assert pieces.coarse[Grain.HOURS_6] == [utc(2026, 7, 2, h) for h in (0, 6, 12)]
    assert pieces.coarse[Grain.HOURS_3] == [utc(2026, 7, 2, 18)]
    assert pieces.coarse[Grain.DAY] == [] and pieces.quarters == []


def test_a_kolkata_day_is_blocks_hours_and_a_half_hour_at_each_end() -> None:
    start, end = utc(2026, 11, 4, 18, 30), utc(2026, 11, 5, 18, 30)
    pieces = cut([start, end], ALL)
    assert pieces.quarters == [
        utc(2026, 11, 4, 18, 30),
        utc(2026, 11, 4, 18, 45),
        utc(2026, 11, 5, 18, 0),
        utc(2026, 11, 5, 18, 15),
    ]
    assert pieces.coarse[Grain.HOUR] == [utc(2026, 11, 4, 19), utc(2026, 11, 4, 20)]
    assert pieces.coarse[Grain.HOURS_3] == [utc(2026, 11, 4, 21)]
    assert pieces.coarse[Grain.HOURS_6] == [utc(2026, 11, 5, h) for h in (0, 6, 12)]
    assert pieces.coarse[Grain.DAY] == []


def test_without_blocks_a_kolkata_day_is_23_hours_and_four_quarter_hours() -> None:
    start, end = utc(2026, 11, 4, 18, 30), utc(2026, 11, 5, 18, 30)
    pieces = cut([start, end], [Grain.MONTH, Grain.DAY, Grain.HOUR])
    assert pieces.coarse[Grain.HOUR] == [start + Q * 2 + H * i for i in range(23)]
    assert len(pieces.quarters) == 4


def test_without_an_hour_projection_the_edges_are_quarter_hours() -> None:
    pieces = cut([utc(2026, 10, 31, 23), utc(2026, 11, 2, 1)], [Grain.MONTH, Grain.DAY])
    assert Grain.HOUR not in pieces.coarse
    assert pieces.coarse[Grain.DAY] == [utc(2026, 11, 1)]
    assert pieces.quarters == [utc(2026, 10, 31, 23) + Q * i for i in range(4)] + [
        utc(2026, 11, 2) + Q * i for i in range(4)
    ]


def test_the_last_month_of_the_calendar_is_cut_without_overflow() -> None:
    pieces = cut([utc(9999, 12, 1), utc(9999, 12, 2)], ALL)
    assert pieces.coarse[Grain.DAY] == [utc(9999, 12, 1)]


@st.composite
def edges(draw: st.DrawFn) -> list[datetime]:
    start = utc(2026, 1, 1) + Q * draw(st.integers(min_value=0, max_value=400 * 96))
    steps = draw(
        st.lists(
            st.one_of(
                st.integers(min_value=1, max_value=8),
                st.integers(min_value=1, max_value=200),
                st.integers(min_value=1, max_value=80 * 96),
            ),
            min_size=1,
            max_size=6,
        )
    )
    result = [start]
    for step in steps:
        result.append(result[-1] + Q * step)
    return result


@settings(max_examples=300, deadline=None)
@given(edges=edges(), grains=st.sets(st.sampled_from(ALL)))
def test_pieces_partition_every_window_into_aligned_buckets(
    edges: list[datetime], grains: set[Grain]
) -> None:
    pieces = cut(edges, grains)
    intervals = [(q, q + Q) for q in pieces.quarters]
    for grain, starts in pieces.coarse.items():
        assert grain in grains
        for start in starts:
            assert grain_start(grain, start) == start
            intervals.append((start, grain_end(grain, start)))
    intervals.sort()
    # Contiguous, no overlap, exactly the whole range.
    assert intervals[0][0] == edges[0] and intervals[-1][1] == edges[-1]
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert end == start
    # No piece straddles a window edge.
    inner = set(edges[1:-1])
    for start, end in intervals:
        assert not any(start < edge < end for edge in inner)
    # Coarsest first: no four quarters of one hour when hours are usable, etc.
    if Grain.HOUR in grains:
        starts = {q for q in pieces.quarters if q.minute == 0}
        assert all(q + Q * 3 not in pieces.quarters or not _in_one_window(q, edges) for q in starts)


def _in_one_window(hour: datetime, edges: list[datetime]) -> bool:
    return not any(hour < edge < hour + H for edge in edges) and edges[0] <= hour < edges[-1]


def test_the_cheapest_projection_that_keeps_every_key() -> None:
    assert projection_for(Grain.MONTH, needed_bits(["user_id"])) == USER
    assert projection_for(Grain.DAY, needed_bits(["user_id", "model"])) == USER | MODEL
    assert projection_for(Grain.MONTH, needed_bits(["api_key_id", "model"])) == API_KEY | MODEL
    # Days keep no pair of key and model, hours no API key at all: finer levels answer there.
    assert projection_for(Grain.DAY, needed_bits(["api_key_id", "model"])) is None
    assert projection_for(Grain.HOUR, needed_bits(["api_key_id"])) is None
    # A dimension alone: model and dimensions; with a user: only the full key has both.
    assert projection_for(Grain.MONTH, needed_bits(["region"])) == MODEL | DIMENSIONS
    assert projection_for(Grain.MONTH, needed_bits(["region", "user_id"])) == FULL
    assert projection_for(Grain.DAY, needed_bits(["region", "user_id"])) is None
    # Hours keep no pair of user and key, nor the full key: those hours are quarter hours.
    assert projection_for(Grain.HOUR, needed_bits(["user_id", "api_key_id"])) is None
    assert projection_for(Grain.HOUR, needed_bits(["region", "user_id"])) is None
    # No key: the projection with the fewest rows.
    assert projection_for(Grain.MONTH, 0) in PROJECTIONS[Grain.MONTH]
