"""The quarter-hour grid of UTC time.

Usage is stored in 15-minute buckets, so every instant that splits usage (a query's `from`
and `to` and its window starts, a price's `effective_from` and `effective_to`, a rollup
rebuild's range) must lie on a 15-minute boundary in UTC: minutes 00, 15, 30 or 45, zero
seconds. Every UTC offset in use today is a multiple of 15 minutes (+05:45 Kathmandu, +10:30
Lord Howe), so local midnights and month starts in any current zone lie on the grid.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

QUARTER_HOUR_MINUTES = 15
QUARTER_HOUR = timedelta(minutes=QUARTER_HOUR_MINUTES)


def floor_to_quarter_hour(instant: datetime) -> datetime:
    """The latest 15-minute boundary at or before `instant` (aware), in UTC."""
    utc = instant.astimezone(UTC)
    minute = utc.minute - utc.minute % QUARTER_HOUR_MINUTES
    return utc.replace(minute=minute, second=0, microsecond=0)


def ceil_to_quarter_hour(instant: datetime) -> datetime:
    """The earliest 15-minute boundary at or after `instant` (aware), in UTC."""
    floor = floor_to_quarter_hour(instant)
    return floor if floor == instant else floor + QUARTER_HOUR


def is_on_quarter_hour(instant: datetime) -> bool:
    """Whether the aware `instant` lies on a 15-minute boundary in UTC."""
    return floor_to_quarter_hour(instant) == instant
