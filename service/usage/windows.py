"""Usage windows: calendar hours, days and months of an IANA time zone, as UTC instants.

A window is a maximal stretch of time during which the local wall clock stays in one calendar
hour, day or month. So a day starts at local midnight (or, where a DST change skips midnight,
at the first instant of the day) and lasts 23, 24 or 25 hours; a month starts at the first
instant of its first day; an hour repeated by a DST fall-back is one window of two hours, and
an hour partly skipped by a spring-forward (Lord Howe moves by 30 minutes) is shorter.

Rollups are 15-minute buckets, so a window can be answered exactly only when its boundaries
fall on 15-minute instants in UTC; every offset in use today is a multiple of 15 minutes
(+05:45 Kathmandu, +10:30 Lord Howe), historic local mean times are not, and such windows are
refused rather than answered approximately.

Pure functions, no database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from service.common.time import is_on_quarter_hour
from service.rollups.models import BUCKET_MINUTES

MAX_WINDOWS = 10_000
_TICK = timedelta(microseconds=1)


class WindowSize(StrEnum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


# Typical window lengths: a range more than 10% over the limit at these is refused before its
# windows are enumerated (DST changes add at most a window or two per year).
_NOMINAL = {
    WindowSize.HOUR: timedelta(hours=1),
    WindowSize.DAY: timedelta(days=1),
    WindowSize.MONTH: timedelta(days=30),
}


@dataclass(frozen=True, slots=True)
class WindowError(Exception):
    """A range or zone that windows cannot be built for; `field` names the query parameter."""

    field: str
    message: str


def window_boundaries(
    start: datetime, end: datetime, size: WindowSize | None, zone: ZoneInfo
) -> list[datetime]:
    """Sorted UTC instants [start, b1, …, end]: the window starts strictly inside (start, end)
    with the range ends; window i is [result[i], result[i + 1]). Without a size, one window.
    The first and last windows are clipped to the range. Raises WindowError."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if size is None:
        return [start, end]
    if (end - start) / _NOMINAL[size] > MAX_WINDOWS * 1.1:
        raise _too_many(size)
    try:
        boundaries = _boundaries(start, end, size, zone)
    except (OverflowError, ValueError) as exc:  # wall times outside years 1..9999
        raise WindowError("from", "the range is too close to the limits of the calendar") from exc
    if len(boundaries) - 1 > MAX_WINDOWS:
        raise _too_many(size)
    for boundary in boundaries[1:-1]:
        if not is_on_quarter_hour(boundary):
            local = boundary.astimezone(zone)
            raise WindowError(
                "timezone",
                f"in {zone.key} a {size.value} starts at {local.isoformat()} "
                f"({boundary:%Y-%m-%dT%H:%M:%SZ}), which is not on a {BUCKET_MINUTES}-minute "
                "boundary in UTC: usage is kept in 15-minute buckets and cannot be split there",
            )
    return boundaries


def _boundaries(start: datetime, end: datetime, size: WindowSize, zone: ZoneInfo) -> list[datetime]:
    unit = _UNIT[size]
    step = _STEP[size]
    naive = _floor(start.astimezone(zone).replace(tzinfo=None), size)
    naive = _step_back(naive, size)
    last = end.astimezone(zone).replace(tzinfo=None)
    inside: set[datetime] = set()
    while naive <= last + _ONE[size]:
        for candidate in _instants_starting(naive, zone, unit):
            if start < candidate < end:
                inside.add(candidate)
        naive = step(naive)
    return [start, *sorted(inside), end]


def _too_many(size: WindowSize) -> WindowError:
    return WindowError(
        "window_size",
        f"the range holds more than {MAX_WINDOWS} {size.value} windows; "
        "shorten it or use a larger window_size",
    )


Unit = Callable[[datetime], tuple[int, ...]]

_UNIT: dict[WindowSize, Unit] = {
    WindowSize.HOUR: lambda t: (t.year, t.month, t.day, t.hour),
    WindowSize.DAY: lambda t: (t.year, t.month, t.day),
    WindowSize.MONTH: lambda t: (t.year, t.month),
}


def _next_month(naive: datetime) -> datetime:
    if naive.month == 12:
        return naive.replace(year=naive.year + 1, month=1)
    return naive.replace(month=naive.month + 1)


def _prev_month(naive: datetime) -> datetime:
    if naive.month == 1:
        return naive.replace(year=naive.year - 1, month=12)
    return naive.replace(month=naive.month - 1)


_STEP: dict[WindowSize, Callable[[datetime], datetime]] = {
    WindowSize.HOUR: lambda t: t + timedelta(hours=1),
    WindowSize.DAY: lambda t: t + timedelta(days=1),
    WindowSize.MONTH: _next_month,
}
_ONE = {
    WindowSize.HOUR: timedelta(hours=1),
    WindowSize.DAY: timedelta(days=1),
    WindowSize.MONTH: timedelta(days=31),
}


def _step_back(naive: datetime, size: WindowSize) -> datetime:
    return _prev_month(naive) if size is WindowSize.MONTH else naive - _ONE[size]


def _floor(naive: datetime, size: WindowSize) -> datetime:
    naive = naive.replace(minute=0, second=0, microsecond=0)
    if size is WindowSize.HOUR:
        return naive
    naive = naive.replace(hour=0)
    return naive if size is WindowSize.DAY else naive.replace(day=1)


def _local_unit(instant: datetime, zone: ZoneInfo, unit: Unit) -> tuple[int, ...]:
    return unit(instant.astimezone(zone))


def _instants_starting(naive: datetime, zone: ZoneInfo, unit: Unit) -> list[datetime]:
    """The UTC instants at which a window starts because the local clock reaches (or jumps
    over, or back across) the wall time `naive`, the start of a calendar unit."""
    early = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    late = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    candidates = [early]
    if early != late:
        # Skipped (early > late) or repeated (early < late) wall time: the offset changes
        # between the two readings, and the change itself may start a window.
        low, high = min(early, late), max(early, late)
        candidates += [late, _transition(low, high, zone)]
    return [
        t for t in candidates if _local_unit(t, zone, unit) != _local_unit(t - _TICK, zone, unit)
    ]


def _transition(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (low, high] whose UTC offset differs from low's, to the second."""
    before = low.astimezone(zone).utcoffset()
    lo, hi = 0, int((high - low).total_seconds())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (low + timedelta(seconds=mid)).astimezone(zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return low + timedelta(seconds=hi)
