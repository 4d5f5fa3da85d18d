"""Window arithmetic in awkward zones, without a database: 23- and 25-hour days, Lord Howe's
30-minute DST shift, Kathmandu's +05:45, month windows, clipping, limits."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from service.common.time import is_on_quarter_hour
from service.usage.windows import MAX_WINDOWS, WindowError, WindowSize, window_boundaries


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def windows(zone: str, start: str, end: str, size: str | None) -> list[datetime]:
    return window_boundaries(
        utc(start), utc(end), None if size is None else WindowSize(size), ZoneInfo(zone)
    )


def lengths(boundaries: list[datetime]) -> list[timedelta]:
    return [b - a for a, b in pairwise(boundaries)]


def local(boundaries: list[datetime], zone: str) -> list[str]:
    return [b.astimezone(ZoneInfo(zone)).isoformat() for b in boundaries]


H = timedelta(hours=1)


def test_without_a_size_one_window_is_the_range() -> None:
    assert windows("Europe/Berlin", "2026-01-01T00:15:00Z", "2026-03-01T00:00:00Z", None) == [
        utc("2026-01-01T00:15:00Z"),
        utc("2026-03-01T00:00:00Z"),
    ]


def test_berlin_spring_forward_day_has_23_hours_and_fall_back_day_25() -> None:
    spring = windows("Europe/Berlin", "2026-03-27T23:00:00Z", "2026-03-30T22:00:00Z", "day")
    assert local(spring, "Europe/Berlin") == [
        "2026-03-28T00:00:00+01:00",
        "2026-03-29T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00",
        "2026-03-31T00:00:00+02:00",
    ]
    assert lengths(spring) == [24 * H, 23 * H, 24 * H]
    autumn = windows("Europe/Berlin", "2026-10-24T22:00:00Z", "2026-10-26T23:00:00Z", "day")
    assert lengths(autumn) == [25 * H, 24 * H]


def test_new_york_fall_back_day_has_25_hours() -> None:
    days = windows("America/New_York", "2026-11-01T04:00:00Z", "2026-11-03T05:00:00Z", "day")
    assert local(days, "America/New_York") == [
        "2026-11-01T00:00:00-04:00",
        "2026-11-02T00:00:00-05:00",
        "2026-11-03T00:00:00-05:00",
    ]
    assert lengths(days) == [25 * H, 24 * H]


def test_repeated_hour_is_one_two_hour_window_and_skipped_hour_is_absent() -> None:
    autumn = windows("Europe/Berlin", "2026-10-24T23:00:00Z", "2026-10-25T04:00:00Z", "hour")
    assert local(autumn, "Europe/Berlin") == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T04:00:00+01:00",
        "2026-10-25T05:00:00+01:00",
    ]
    assert lengths(autumn) == [H, 2 * H, H, H]
    spring = windows("Europe/Berlin", "2026-03-28T23:00:00Z", "2026-03-29T03:00:00Z", "hour")
    assert local(spring, "Europe/Berlin") == [
        "2026-03-29T00:00:00+01:00",
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
        "2026-03-29T05:00:00+02:00",
    ]
    assert lengths(spring) == [H, H, H, H]


def test_lord_howe_moves_by_30_minutes() -> None:
    zone = "Australia/Lord_Howe"
    # 2026-04-05 02:00 +11:00 becomes 01:30 +10:30: 01:30-02:00 happens twice.
    autumn_hours = windows(zone, "2026-04-04T13:00:00Z", "2026-04-04T16:30:00Z", "hour")
    assert local(autumn_hours, zone) == [
        "2026-04-05T00:00:00+11:00",
        "2026-04-05T01:00:00+11:00",
        "2026-04-05T02:00:00+10:30",
        "2026-04-05T03:00:00+10:30",
    ]
    assert lengths(autumn_hours) == [H, 1.5 * H, H]
    autumn_day = windows(zone, "2026-04-04T13:00:00Z", "2026-04-05T13:30:00Z", "day")
    assert lengths(autumn_day) == [24.5 * H]
    # 2026-10-04 02:00 +10:30 becomes 02:30 +11:00: the "2 o'clock" hour lasts 30 minutes.
    spring_hours = windows(zone, "2026-10-03T14:30:00Z", "2026-10-03T17:00:00Z", "hour")
    assert local(spring_hours, zone) == [
        "2026-10-04T01:00:00+10:30",
        "2026-10-04T02:30:00+11:00",
        "2026-10-04T03:00:00+11:00",
        "2026-10-04T04:00:00+11:00",
    ]
    assert lengths(spring_hours) == [H, 0.5 * H, H]
    spring_day = windows(zone, "2026-10-03T13:30:00Z", "2026-10-04T13:00:00Z", "day")
    assert lengths(spring_day) == [23.5 * H]


def test_kathmandu_days_and_months_start_at_quarter_past() -> None:
    zone = "Asia/Kathmandu"
    days = windows(zone, "2026-05-30T18:15:00Z", "2026-06-01T18:15:00Z", "day")
    assert days == [
        utc("2026-05-30T18:15:00Z"),
        utc("2026-05-31T18:15:00Z"),
        utc("2026-06-01T18:15:00Z"),
    ]
    months = windows(zone, "2026-01-31T18:15:00Z", "2026-04-30T18:15:00Z", "month")
    assert local(months, zone) == [
        "2026-02-01T00:00:00+05:45",
        "2026-03-01T00:00:00+05:45",
        "2026-04-01T00:00:00+05:45",
        "2026-05-01T00:00:00+05:45",
    ]
    assert lengths(months) == [28 * 24 * H, 31 * 24 * H, 30 * 24 * H]


def test_month_windows_include_the_dst_change() -> None:
    months = windows("Europe/Berlin", "2026-02-28T23:00:00Z", "2026-04-30T22:00:00Z", "month")
    assert local(months, "Europe/Berlin") == [
        "2026-03-01T00:00:00+01:00",
        "2026-04-01T00:00:00+02:00",
        "2026-05-01T00:00:00+02:00",
    ]
    assert lengths(months) == [(31 * 24 - 1) * H, 30 * 24 * H]
    across_year = windows("Asia/Kolkata", "2026-11-30T18:30:00Z", "2027-01-31T18:30:00Z", "month")
    assert local(across_year, "Asia/Kolkata")[1] == "2027-01-01T00:00:00+05:30"


def test_first_and_last_windows_are_clipped_to_the_range() -> None:
    days = windows("Europe/Berlin", "2026-03-28T10:15:00Z", "2026-03-30T05:45:00Z", "day")
    assert days == [
        utc("2026-03-28T10:15:00Z"),
        utc("2026-03-28T23:00:00Z"),
        utc("2026-03-29T22:00:00Z"),
        utc("2026-03-30T05:45:00Z"),
    ]


def test_a_day_that_skips_midnight_starts_when_it_begins() -> None:
    # Santiago springs forward at 24:00 on 2026-09-05: 2026-09-06 begins at 01:00 -03:00.
    days = windows("America/Santiago", "2026-09-05T04:00:00Z", "2026-09-07T03:00:00Z", "day")
    assert local(days, "America/Santiago") == [
        "2026-09-05T00:00:00-04:00",
        "2026-09-06T01:00:00-03:00",
        "2026-09-07T00:00:00-03:00",
    ]


@pytest.mark.parametrize(
    "zone", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
)
def test_boundaries_are_where_the_local_calendar_unit_changes(zone: str) -> None:
    """Cross-check against brute force: walk 2026 quarter by quarter and mark each instant
    where the local hour/day/month differs from the instant just before it."""
    tz = ZoneInfo(zone)
    start, end = utc("2026-01-01T00:00:00Z"), utc("2026-12-31T00:00:00Z")
    units = {
        "hour": lambda t: (t.year, t.month, t.day, t.hour),
        "day": lambda t: (t.year, t.month, t.day),
        "month": lambda t: (t.year, t.month),
    }
    tick = timedelta(microseconds=1)
    for size, unit in units.items():
        expected = [start]
        t = start + timedelta(minutes=15)
        while t < end:
            if unit(t.astimezone(tz)) != unit((t - tick).astimezone(tz)):
                expected.append(t)
            t += timedelta(minutes=15)
        expected.append(end)
        assert window_boundaries(start, end, WindowSize(size), tz) == expected, size


def test_every_zone_has_quarter_hour_windows_today() -> None:
    from zoneinfo import available_timezones

    rng = random.Random(5)
    for name in rng.sample(sorted(available_timezones()), 60):
        boundaries = window_boundaries(
            utc("2026-01-01T00:00:00Z"), utc("2027-01-01T00:00:00Z"), WindowSize.DAY, ZoneInfo(name)
        )
        assert all(is_on_quarter_hour(b) for b in boundaries), name


def test_historic_local_mean_time_is_refused() -> None:
    with pytest.raises(WindowError) as caught:
        windows("Europe/Berlin", "1890-01-01T00:00:00Z", "1890-01-05T00:00:00Z", "day")
    assert caught.value.field == "timezone"
    assert "15-minute" in caught.value.message


def test_at_most_10000_windows() -> None:
    start = utc("2026-01-01T00:00:00Z")
    ok = window_boundaries(start, start + MAX_WINDOWS * H, WindowSize.HOUR, ZoneInfo("UTC"))
    assert len(ok) == MAX_WINDOWS + 1
    with pytest.raises(WindowError) as caught:
        window_boundaries(start, start + (MAX_WINDOWS + 1) * H, WindowSize.HOUR, ZoneInfo("UTC"))
    assert caught.value.field == "window_size"
    with pytest.raises(WindowError):  # refused before enumerating a century of hours
        window_boundaries(start, start + 876_000 * H, WindowSize.HOUR, ZoneInfo("UTC"))
    assert len(window_boundaries(start, start + 876_000 * H, WindowSize.MONTH, ZoneInfo("UTC")))


def test_bucket_alignment() -> None:
    assert is_on_quarter_hour(utc("2026-11-01T05:45:00Z"))
    assert not is_on_quarter_hour(utc("2026-11-01T05:40:00Z"))
    assert not is_on_quarter_hour(utc("2026-11-01T05:45:00.000001Z"))
