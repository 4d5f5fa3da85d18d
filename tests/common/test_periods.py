"""`period` resolved in a zone: whole local days and months across DST changes, year ends and
+05:45; rolling 7d/30d ending at now rounded up to a quarter hour; checked against hand-worked
instants and, for any zone and date, against a naive minute-by-minute scan of the local clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.common.periods import PeriodError, parse_period, resolve_period
from service.common.time import is_on_quarter_hour
from service.common.timezones import IANA_ZONES

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
KATHMANDU = ZoneInfo("Asia/Kathmandu")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def shown(text: str, zone: ZoneInfo, now: datetime) -> tuple[str, str]:
    start, end = resolve_period(text, zone, now)
    return start.isoformat(), end.isoformat()


NOW = utc("2026-11-18T09:07:00")


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        # Berlin springs forward on 2026-03-29 (02:00 → 03:00): a 23-hour day, a 743-hour month.
        ("2026-03-29", BERLIN, ("2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00")),
        ("2026-03", BERLIN, ("2026-03-01T00:00:00+01:00", "2026-04-01T00:00:00+02:00")),
        # ...and falls back on 2026-10-25 (03:00 → 02:00): a 25-hour day.
        ("2026-10-25", BERLIN, ("2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00")),
        ("2026-10", BERLIN, ("2026-10-01T00:00:00+02:00", "2026-11-01T00:00:00+01:00")),
        # New York: 2026-03-08 and 2026-11-01.
        ("2026-03-08", NEW_YORK, ("2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00")),
        ("2026-11-01", NEW_YORK, ("2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00")),
        ("2026-11", NEW_YORK, ("2026-11-01T00:00:00-04:00", "2026-12-01T00:00:00-05:00")),
        # Year ends.
        ("2026-12", BERLIN, ("2026-12-01T00:00:00+01:00", "2027-01-01T00:00:00+01:00")),
        ("2026-12-31", NEW_YORK, ("2026-12-31T00:00:00-05:00", "2027-01-01T00:00:00-05:00")),
        ("2027-01-01", KATHMANDU, ("2027-01-01T00:00:00+05:45", "2027-01-02T00:00:00+05:45")),
        # +05:45: midnight is 18:15 UTC the day before.
        ("2026-11", KATHMANDU, ("2026-11-01T00:00:00+05:45", "2026-12-01T00:00:00+05:45")),
        # Where a DST change skips midnight, the day starts when the clock jumps into it.
        (
            "2018-11-04",
            ZoneInfo("America/Sao_Paulo"),
            ("2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00"),
        ),
        # Leap day.
        ("2028-02-29", ZoneInfo("UTC"), ("2028-02-29T00:00:00+00:00", "2028-03-01T00:00:00+00:00")),
    ],
)
def test_calendar_days_and_months(text: str, zone: ZoneInfo, expected: tuple[str, str]) -> None:
    assert shown(text, zone, NOW) == expected


def test_day_lengths_follow_dst() -> None:
    def hours(text: str, zone: ZoneInfo) -> float:
        start, end = resolve_period(text, zone, NOW)
        # Both carry the same tzinfo, so Python would subtract wall times: compare in UTC.
        return (end.astimezone(UTC) - start.astimezone(UTC)) / timedelta(hours=1)

    assert hours("2026-03-29", BERLIN) == 23
    assert hours("2026-10-25", BERLIN) == 25
    assert hours("2026-03", BERLIN) == 31 * 24 - 1
    assert hours("2026-10", BERLIN) == 31 * 24 + 1
    assert hours("2026-11-01", NEW_YORK) == 25
    assert hours("2026-06-15", BERLIN) == 24


@pytest.mark.parametrize(
    ("now", "zone", "text", "expected"),
    [
        # 23:30 UTC on New Year's Eve is already 2027 in Berlin, still 2026 in New York.
        (
            "2026-12-31T23:30:00",
            BERLIN,
            "today",
            ("2027-01-01T00:00:00+01:00", "2027-01-02T00:00:00+01:00"),
        ),
        (
            "2026-12-31T23:30:00",
            BERLIN,
            "yesterday",
            ("2026-12-31T00:00:00+01:00", "2027-01-01T00:00:00+01:00"),
        ),
        (
            "2026-12-31T23:30:00",
            BERLIN,
            "this_month",
            ("2027-01-01T00:00:00+01:00", "2027-02-01T00:00:00+01:00"),
        ),
        (
            "2026-12-31T23:30:00",
            BERLIN,
            "last_month",
            ("2026-12-01T00:00:00+01:00", "2027-01-01T00:00:00+01:00"),
        ),
        (
            "2026-12-31T23:30:00",
            NEW_YORK,
            "today",
            ("2026-12-31T00:00:00-05:00", "2027-01-01T00:00:00-05:00"),
        ),
        (
            "2026-12-31T23:30:00",
            NEW_YORK,
            "this_month",
            ("2026-12-01T00:00:00-05:00", "2027-01-01T00:00:00-05:00"),
        ),
        (
            "2026-12-31T23:30:00",
            NEW_YORK,
            "last_month",
            ("2026-11-01T00:00:00-04:00", "2026-12-01T00:00:00-05:00"),
        ),
        # January's last month is the previous year's December.
        (
            "2027-01-15T12:00:00",
            KATHMANDU,
            "last_month",
            ("2026-12-01T00:00:00+05:45", "2027-01-01T00:00:00+05:45"),
        ),
        # Kathmandu's 1 January starts at 18:15 UTC on 31 December.
        (
            "2026-12-31T18:15:00",
            KATHMANDU,
            "today",
            ("2027-01-01T00:00:00+05:45", "2027-01-02T00:00:00+05:45"),
        ),
        (
            "2026-12-31T18:14:00",
            KATHMANDU,
            "today",
            ("2026-12-31T00:00:00+05:45", "2027-01-01T00:00:00+05:45"),
        ),
        # The day of a DST change, asked during it.
        (
            "2026-03-29T12:00:00",
            BERLIN,
            "today",
            ("2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"),
        ),
        (
            "2026-03-30T12:00:00",
            BERLIN,
            "yesterday",
            ("2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"),
        ),
    ],
)
def test_named_days_and_months(
    now: str, zone: ZoneInfo, text: str, expected: tuple[str, str]
) -> None:
    assert shown(text, zone, utc(now)) == expected


@pytest.mark.parametrize(
    ("now", "end"),
    [
        ("2026-11-18T09:00:00", "2026-11-18T09:00:00"),  # on a boundary: now itself
        ("2026-11-18T09:00:00.000001", "2026-11-18T09:15:00"),
        ("2026-11-18T09:14:59.999999", "2026-11-18T09:15:00"),
        ("2026-11-18T09:15:00", "2026-11-18T09:15:00"),
        ("2026-11-18T23:50:00", "2026-11-19T00:00:00"),
        ("2026-12-31T23:59:00", "2027-01-01T00:00:00"),
    ],
)
@pytest.mark.parametrize(("text", "days"), [("7d", 7), ("30d", 30)])
def test_rolling_ranges_end_at_now_rounded_up(now: str, end: str, text: str, days: int) -> None:
    start, stop = resolve_period(text, BERLIN, utc(now))
    assert stop == utc(end)
    assert stop.astimezone(UTC) - start.astimezone(UTC) == timedelta(days=days)


def test_rolling_ranges_are_exact_hours_across_dst() -> None:
    """7d across Berlin's spring-forward: 168 hours, so the local clock reads an hour later."""
    start, end = resolve_period("7d", BERLIN, utc("2026-04-01T10:05:00"))
    assert (start.isoformat(), end.isoformat()) == (
        "2026-03-25T11:15:00+01:00",
        "2026-04-01T12:15:00+02:00",
    )
    start, end = resolve_period("30d", KATHMANDU, utc("2026-04-01T10:05:00"))
    assert end.isoformat() == "2026-04-01T16:00:00+05:45"
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=720)


def test_answers_carry_the_zone_offset() -> None:
    for text in ("today", "7d", "2026-03", "last_month"):
        start, end = resolve_period(text, KATHMANDU, NOW)
        assert start.utcoffset() == end.utcoffset() == timedelta(hours=5, minutes=45)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "is not a period"),
        ("week", "is not a period"),
        ("7D", "is not a period"),
        ("8d", "is not a period"),
        ("2026-13", "not a calendar month"),
        ("2026-00", "not a calendar month"),
        ("0000-01", "not a calendar month"),
        ("2026-02-30", "not a calendar date"),
        ("2026-1", "is not a period"),
        ("2026-11-01T00:00:00Z", "is not a period"),
        (" today", "is not a period"),
        ("x" * 500, "is not a period"),
    ],
)
def test_bad_periods_say_what_is_accepted(text: str, needle: str) -> None:
    with pytest.raises(PeriodError) as raised:
        parse_period(text)
    assert needle in raised.value.message
    assert raised.value.field_error().field == "period"
    assert len(raised.value.message) < 200


def test_a_date_the_zone_skipped_has_no_instants() -> None:
    # Kiritimati went from 1994-12-30 straight to 1995-01-01 (UTC-10 to UTC+14).
    with pytest.raises(PeriodError, match="skipped"):
        resolve_period("1994-12-31", ZoneInfo("Pacific/Kiritimati"), NOW)
    start, end = resolve_period("1994-12", ZoneInfo("Pacific/Kiritimati"), NOW)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(days=30)


@pytest.mark.parametrize("text", ["9999-12", "9999-12-31"])
def test_the_end_of_the_calendar_is_an_error_not_a_crash(text: str) -> None:
    with pytest.raises(PeriodError, match="limits of the calendar"):
        resolve_period(text, ZoneInfo("UTC"), NOW)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        resolve_period("today", BERLIN, datetime(2026, 11, 18))  # noqa: DTZ001


# The naive oracle: walk the UTC clock minute by minute and read the local date off it.
ZONES = sorted(IANA_ZONES)
MINUTE = timedelta(minutes=1)


def first_instant_on_or_after(day: date, zone: ZoneInfo) -> datetime:
    """The first whole UTC minute whose local date in `zone` is `day` or later."""
    # Every offset since 1970 lies within -12:00 and +14:00.
    t = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=14)
    while t.astimezone(zone).date() < day:
        t += MINUTE
    return t


@settings(max_examples=150, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    day=st.dates(min_value=date(1971, 1, 1), max_value=date(2037, 12, 30)),
)
def test_days_match_a_walk_of_the_local_clock(zone: str, day: date) -> None:
    tz = ZoneInfo(zone)
    expected = (
        first_instant_on_or_after(day, tz),
        first_instant_on_or_after(day + timedelta(days=1), tz),
    )
    if expected[0] == expected[1]:  # a skipped date
        with pytest.raises(PeriodError):
            resolve_period(day.isoformat(), tz, NOW)
        return
    start, end = resolve_period(day.isoformat(), tz, NOW)
    assert (start, end) == expected
    assert start.tzinfo is tz


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    month=st.dates(min_value=date(1971, 1, 1), max_value=date(2037, 11, 30)),
)
def test_months_match_a_walk_of_the_local_clock(zone: str, month: date) -> None:
    tz = ZoneInfo(zone)
    first = month.replace(day=1)
    after = (first + timedelta(days=32)).replace(day=1)
    start, end = resolve_period(f"{first:%Y-%m}", tz, NOW)
    assert (start, end) == (
        first_instant_on_or_after(first, tz),
        first_instant_on_or_after(after, tz),
    )


@settings(max_examples=200, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    # hypothesis takes naive bounds and attaches `timezones` to what it draws.
    now=st.datetimes(
        min_value=datetime(1971, 1, 1),  # noqa: DTZ001
        max_value=datetime(2037, 12, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
)
def test_named_periods_hold_now_and_meet(zone: str, now: datetime) -> None:
    tz = ZoneInfo(zone)
    today = resolve_period("today", tz, now)
    yesterday = resolve_period("yesterday", tz, now)
    this_month = resolve_period("this_month", tz, now)
    last_month = resolve_period("last_month", tz, now)
    assert today[0] <= now < today[1]
    assert this_month[0] <= now < this_month[1]
    assert yesterday[1] == today[0]
    assert last_month[1] == this_month[0]
    assert this_month[0] <= today[0] and today[1] <= this_month[1]
    assert resolve_period(f"{now.astimezone(tz):%Y-%m-%d}", tz, now) == today
    for text, days in (("7d", 7), ("30d", 30)):
        start, end = resolve_period(text, tz, now)
        assert is_on_quarter_hour(end) and timedelta(0) <= end - now < timedelta(minutes=15)
        assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(days=days)
