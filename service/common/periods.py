"""`period`: a time range named the way people say it, resolved in a time zone.

`today`, `yesterday`, `this_month`, `last_month`, `YYYY-MM` and `YYYY-MM-DD` are whole local
calendar days or months: a day runs from its first instant (local midnight, or where a DST
change skips midnight, the instant the clock jumps into the day) to the first instant of the
next day, so it lasts 23, 24 or 25 hours; a month likewise, from the first instant of its 1st.
`7d` and `30d` are rolling: they end at now rounded up to the next 15-minute boundary in UTC
(now itself when it is on one) and start exactly 7 x 24 or 30 x 24 hours earlier, whatever DST
does meanwhile, so the range is made of whole 15-minute rollup buckets.

Pure functions, no database: any endpoint that takes `from`/`to` resolves `period` here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from service.common.errors import FieldError
from service.common.time import ceil_to_quarter_hour

PERIOD_FIELD = "period"
PERIOD_DOC = (
    "instead of from/to: today, yesterday, 7d, 30d, this_month, last_month, YYYY-MM or "
    "YYYY-MM-DD, in `timezone` (default: the tenant's); days and months are whole local "
    "ones, 7d and 30d end at now rounded up to the next 15-minute boundary"
)
NAMED = ("today", "yesterday", "7d", "30d", "this_month", "last_month")
_ROLLING = {"7d": timedelta(days=7), "30d": timedelta(days=30)}
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_HINT = "today, yesterday, 7d, 30d, this_month, last_month, YYYY-MM or YYYY-MM-DD"
_TICK = timedelta(seconds=1)


class PeriodError(ValueError):
    """A period that is not one of the accepted forms, or has no instants in the zone."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def field_error(self) -> FieldError:
        return FieldError(field=PERIOD_FIELD, message=self.message)


@dataclass(frozen=True, slots=True)
class Period:
    """A parsed period, not yet placed in a zone: a named one, a calendar month or a day."""

    text: str
    month: tuple[int, int] | None = None  # (year, month) of `YYYY-MM`
    day: date | None = None  # of `YYYY-MM-DD`


def parse_period(text: str) -> Period:
    """The period `text` names, checked without a zone (so a bad one is refused before any
    database work). Raises PeriodError."""
    if text in NAMED:
        return Period(text)
    shown = repr(text if len(text) <= 32 else text[:32] + "…")
    if month := _MONTH.match(text):
        year, number = int(month.group(1)), int(month.group(2))
        if year < 1 or not 1 <= number <= 12:
            raise PeriodError(f"{shown} is not a calendar month (YYYY-MM, e.g. 2026-11)")
        return Period(text, month=(year, number))
    if _DAY.match(text):
        try:
            return Period(text, day=date.fromisoformat(text))
        except ValueError:
            raise PeriodError(f"{shown} is not a calendar date (YYYY-MM-DD)") from None
    raise PeriodError(f"{shown} is not a period; one of: {_HINT}")


def resolve_period(text: str, zone: ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
    """[from, to) of the period `text` in `zone`, as aware datetimes carrying the zone's
    offset; `now` (aware) places `today`, `7d` and the others. Raises PeriodError.

    Both ends carry the same tzinfo, and Python subtracts such datetimes by wall clock (a
    23-hour DST day gives 24 hours): convert to UTC before measuring the range."""
    return resolve(parse_period(text), zone, now)


def resolve(period: Period, zone: ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
    """[from, to) of a parsed period in `zone` (see resolve_period). Raises PeriodError."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        start, end = _instants(period, zone, now)
    except (OverflowError, ValueError) as exc:
        # Local dates next to years 1 and 9999 have no UTC instant (or no next day).
        raise PeriodError(
            f"{period.text!r} is too close to the limits of the calendar in {zone.key}"
        ) from exc
    if start >= end:
        # A date the zone skipped: Pacific/Kiritimati went from 1994-12-30 to 1995-01-01.
        raise PeriodError(f"{period.text!r} has no instants in {zone.key}: the zone skipped it")
    return start.astimezone(zone), end.astimezone(zone)


def _instants(period: Period, zone: ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
    if period.text in _ROLLING:
        end = ceil_to_quarter_hour(now)
        return end - _ROLLING[period.text], end
    today = now.astimezone(zone).date()
    first, after = _calendar_range(period, today)
    return start_of_local_date(first, zone), start_of_local_date(after, zone)


def _calendar_range(period: Period, today: date) -> tuple[date, date]:
    """The local dates [first, after) the period covers."""
    if period.day is not None:
        return period.day, period.day + timedelta(days=1)
    if period.month is not None:
        first = date(*period.month, 1)
        return first, _next_month(first)
    if period.text == "today":
        return today, today + timedelta(days=1)
    if period.text == "yesterday":
        return today - timedelta(days=1), today
    this_month = today.replace(day=1)
    if period.text == "this_month":
        return this_month, _next_month(this_month)
    assert period.text == "last_month"
    return _previous_month(this_month), this_month


def _next_month(first: date) -> date:
    return date(first.year + 1, 1, 1) if first.month == 12 else first.replace(month=first.month + 1)


def _previous_month(first: date) -> date:
    return date(first.year - 1, 12, 1) if first.month == 1 else first.replace(month=first.month - 1)


def start_of_local_date(day: date, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the wall clock of `zone` shows the date `day` (or a
    later one, when the zone skipped `day` altogether): local midnight, or when a DST change
    skips midnight, the instant the clock jumps over it."""
    # fold=0 is the earlier reading of a repeated wall time: the first midnight.
    early = datetime(day.year, day.month, day.day, tzinfo=zone, fold=0).astimezone(UTC)
    late = datetime(day.year, day.month, day.day, tzinfo=zone, fold=1).astimezone(UTC)
    if early <= late:
        return early
    # Skipped wall time: the clock jumped over midnight at an instant in (late, early].
    return _offset_change(late, early, zone)


def _offset_change(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (low, high] whose UTC offset differs from low's, to the second."""
    before = low.astimezone(zone).utcoffset()
    lo, hi = 0, int((high - low) / _TICK)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (low + mid * _TICK).astimezone(zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return low + hi * _TICK


def range_choice_errors(period: str | None, has_from: bool, has_to: bool) -> list[FieldError]:
    """`period` and `from`/`to` are one or the other, never both: the errors (for a 422)
    naming `period` and each of `from` and `to` given with it; none when the choice is fine."""
    if period is None:
        return []
    given = [name for name, present in (("from", has_from), ("to", has_to)) if present]
    if not given:
        return []
    message = f"period cannot be combined with {' and '.join(given)}: give one or the other"
    return [FieldError(field=PERIOD_FIELD, message=message)] + [
        FieldError(field=name, message=message) for name in given
    ]


def missing_range_errors(period: str | None, has_from: bool, has_to: bool) -> list[FieldError]:
    """For endpoints that need a range: without `period`, both `from` and `to` are required."""
    if period is not None:
        return []
    return [
        FieldError(field=name, message=f"{name} is required (or give period instead)")
        for name, present in (("from", has_from), ("to", has_to))
        if not present
    ]
