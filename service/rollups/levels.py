"""The rollup levels and how a time range is cut into them (pure: no database).

Usage lives at six time grains: the 15-minute rollups (every attribution field and the
dimensions), and the cube's hour, three-hour, six-hour, day and month buckets (UTC calendar;
three- and six-hour blocks start at 00:00, 03:00, 06:00, ... UTC), each kept in a few
*projections*: the rollup key with some fields dropped. A projection is a bit set over
PROJECTION_FIELDS; the 15-minute level is the full key.

A query's window [a, b) (edges on the 15-minute grid) is cut greedily from the left into the
coarsest buckets that fit: a whole UTC month, else a whole UTC day, else a whole six-hour or
three-hour block, else a whole hour, else a quarter hour. A Berlin day (23:00 to 23:00 UTC)
is one hour, three six-hour blocks, one three-hour block and two hours (7 pieces; 24 hours
without the blocks); a Kolkata day (18:30 to 18:30 UTC) is two quarter hours, two hours, a
three-hour block, three six-hour blocks and two quarter hours. Every piece lies inside one
window, so the answer stays exact in any zone whose offsets are multiples of 15 minutes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum

from service.common.time import QUARTER_HOUR


class Grain(Enum):
    """A cube level; the value is what the `grain` column holds."""

    HOUR = "h"
    HOURS_3 = "3"
    HOURS_6 = "6"
    DAY = "d"
    MONTH = "m"


# The grains that are blocks of whole hours, with their length in hours (aligned on UTC
# midnight).
HOUR_BLOCKS: dict[Grain, int] = {Grain.HOUR: 1, Grain.HOURS_3: 3, Grain.HOURS_6: 6}


# The fields a projection may keep, with their bit; DIMENSIONS stands for the jsonb of the
# meter's dimensions (kept whole or dropped whole).
ORG, PROJECT, API_KEY, USER, MODEL, DIMENSIONS = 1, 2, 4, 8, 16, 32
PROJECTION_FIELDS: dict[str, int] = {
    "org_id": ORG,
    "project_id": PROJECT,
    "api_key_id": API_KEY,
    "user_id": USER,
    "model": MODEL,
}
FULL = ORG | PROJECT | API_KEY | USER | MODEL | DIMENSIONS
_SINGLES = (ORG, PROJECT, API_KEY, USER, MODEL | DIMENSIONS)
_ATTRIBUTION = (ORG, PROJECT, API_KEY, USER, MODEL)
_PAIRS = tuple(a | b for i, a in enumerate(_ATTRIBUTION) for b in _ATTRIBUTION[i + 1 :])

# What each cube level keeps; every cell costs the fold a write, so each level keeps only what
# its reads need. Months keep every single field, every pair and the full key: any one- or
# two-key group-by (with filters) over a UTC month reads about as many cells as it answers.
# Days keep the single fields and user with model: daily windows, and the interior of ranges
# that do not start on a month. Hours keep the small single fields and users: the edges of
# windows that do not start on a UTC midnight (days and months in other zones); three- and
# six-hour blocks keep the same, so a day in another zone reads about 7 cells per group instead
# of 24. A key no projection of a level keeps is read from the next finer level there.
PROJECTIONS: dict[Grain, tuple[int, ...]] = {
    Grain.HOUR: (ORG, PROJECT, USER, MODEL | DIMENSIONS),
    Grain.HOURS_3: (ORG, PROJECT, USER, MODEL | DIMENSIONS),
    Grain.HOURS_6: (ORG, PROJECT, USER, MODEL | DIMENSIONS),
    Grain.DAY: (*_SINGLES, USER | MODEL),
    Grain.MONTH: (*_SINGLES, *_PAIRS, FULL),
}
# Rough number of distinct values per field, to prefer the projection with the fewest rows.
_WEIGHT = {ORG: 1, PROJECT: 2, MODEL: 3, DIMENSIONS: 3, USER: 4, API_KEY: 5}


def needed_bits(keys: Iterable[str]) -> int:
    """The projection bits a query needs: its group-by and filter keys (any key that is not
    an attribution field is a dimension)."""
    bits = 0
    for key in keys:
        bits |= PROJECTION_FIELDS.get(key, DIMENSIONS)
    return bits


def _weight(projection: int) -> int:
    return sum(weight for bit, weight in _WEIGHT.items() if projection & bit)


def projection_for(grain: Grain, needed: int) -> int | None:
    """The cheapest projection of `grain` that keeps every needed field; None when the grain
    keeps none (its buckets are then read at the next finer level)."""
    fitting = [p for p in PROJECTIONS[grain] if p & needed == needed]
    return min(fitting, key=lambda p: (_weight(p), p)) if fitting else None


def grain_start(grain: Grain, instant: datetime) -> datetime:
    """The start of the `grain` bucket holding `instant` (UTC)."""
    utc = instant.astimezone(UTC)
    if grain in HOUR_BLOCKS:
        hour = utc.hour - utc.hour % HOUR_BLOCKS[grain]
        return utc.replace(hour=hour, minute=0, second=0, microsecond=0)
    if grain is Grain.DAY:
        return utc.replace(hour=0, minute=0, second=0, microsecond=0)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def grain_end(grain: Grain, start: datetime) -> datetime:
    """The end of the `grain` bucket starting at `start`."""
    if grain in HOUR_BLOCKS:
        return start + timedelta(hours=HOUR_BLOCKS[grain])
    if grain is Grain.DAY:
        return start + timedelta(days=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


@dataclass(slots=True)
class Pieces:
    """A range cut into buckets: bucket starts per cube grain, and the quarter hours left."""

    coarse: dict[Grain, list[datetime]] = field(default_factory=dict)
    quarters: list[datetime] = field(default_factory=list)

    @property
    def coarse_grains(self) -> list[Grain]:
        return [grain for grain, starts in self.coarse.items() if starts]


# Coarsest first: the greedy cut tries them in this order.
_ORDER = (Grain.MONTH, Grain.DAY, Grain.HOURS_6, Grain.HOURS_3, Grain.HOUR)


def cut(edges: Sequence[datetime], grains: Iterable[Grain]) -> Pieces:
    """Cut every window [edges[i], edges[i + 1]) into buckets of the given cube `grains`
    (those with a usable projection) and quarter hours, coarsest first from the left.
    Edges must be sorted UTC instants on the 15-minute grid."""
    usable = [grain for grain in _ORDER if grain in set(grains)]
    pieces = Pieces({grain: [] for grain in usable})
    for start, end in itertools.pairwise(edges):
        at = start
        while at < end:
            for grain in usable:
                following = _whole_bucket_end(grain, at)
                if following is not None and following <= end:
                    pieces.coarse[grain].append(at)
                    at = following
                    break
            else:
                pieces.quarters.append(at)
                at += QUARTER_HOUR
    return pieces


def _whole_bucket_end(grain: Grain, at: datetime) -> datetime | None:
    """The end of the `grain` bucket starting exactly at `at`; None when `at` is not a bucket
    start (or the bucket would end past the calendar)."""
    if grain_start(grain, at) != at:
        return None
    try:
        return grain_end(grain, at)
    except (ValueError, OverflowError):
        return None


# A piece of a signed cut: (grain, or None for a quarter hour; bucket start; window index
# from 0; +1 or -1).
SignedPiece = tuple[Grain | None, datetime, int, int]


def _greedy(
    start: datetime, end: datetime, usable: Sequence[Grain]
) -> list[tuple[Grain | None, datetime]]:
    """[start, end) cut into the coarsest whole buckets of `usable` (coarsest first), else
    quarter hours, from the left."""
    pieces: list[tuple[Grain | None, datetime]] = []
    at = start
    while at < end:
        for grain in usable:
            following = _whole_bucket_end(grain, at)
            if following is not None and following <= end:
                pieces.append((grain, at))
                at = following
                break
        else:
            pieces.append((None, at))
            at += QUARTER_HOUR
    return pieces


def _holding(instant: datetime, usable: Sequence[Grain]) -> list[tuple[datetime, datetime]]:
    """The buckets of `usable` grains that hold `instant`, as (start, end)."""
    found = []
    for grain in usable:
        start = grain_start(grain, instant)
        try:
            found.append((start, grain_end(grain, start)))
        except (ValueError, OverflowError):
            continue
    return found


def cut_signed(edges: Sequence[datetime], grains: Iterable[Grain]) -> list[SignedPiece]:
    """Every window [a, b) cut as `cut` does, or, when that takes fewer pieces, as a larger
    range [d, c) of whole coarse buckets minus what lies outside the window ([d, a) and
    [b, c), each cut the same way): a Berlin month is then the UTC month, plus the hour before
    it, minus its last hour, three pieces instead of a month's worth of days and hours, and a
    key no hour keeps reads 8 quarter hours instead of 96. Only sums and counts can be taken
    apart this way (a latest or largest value cannot), so only for queries that read those
    alone. Pieces come with their window (0 = the first) and sign; summed with their signs,
    they count every instant of each window exactly once and nothing outside."""
    usable = [grain for grain in _ORDER if grain in set(grains)]
    pieces: list[SignedPiece] = []
    for window, (start, end) in enumerate(itertools.pairwise(edges)):
        best = [(grain, at, 1) for grain, at in _greedy(start, end, usable)]
        # Any other way takes at least two pieces (one added, one taken away).
        lefts = [start, *(d for d, _ in _holding(start, usable) if d < start)]
        rights = [end, *(c for _, c in _holding(end - QUARTER_HOUR, usable) if c > end)]
        for left in lefts if len(best) > 2 else ():
            for right in rights:
                if left == start and right == end:
                    continue
                candidate = [(grain, at, 1) for grain, at in _greedy(left, right, usable)]
                candidate += [(grain, at, -1) for grain, at in _greedy(left, start, usable)]
                candidate += [(grain, at, -1) for grain, at in _greedy(end, right, usable)]
                if len(candidate) < len(best):
                    best = candidate
        pieces += [(grain, at, window, sign) for grain, at, sign in best]
    return pieces
