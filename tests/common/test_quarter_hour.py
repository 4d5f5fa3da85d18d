"""The one quarter-hour check every caller uses (usage queries, prices, rollup rebuilds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from service.common.time import ceil_to_quarter_hour, floor_to_quarter_hour, is_on_quarter_hour

KATHMANDU = timezone(timedelta(hours=5, minutes=45))


def test_instants_with_any_current_offset_are_judged_in_utc() -> None:
    # Local midnight in Kathmandu is 18:15 UTC: on the grid.
    assert is_on_quarter_hour(datetime(2026, 11, 2, tzinfo=KATHMANDU))
    assert not is_on_quarter_hour(datetime(2026, 11, 2, 0, 10, tzinfo=KATHMANDU))
    assert not is_on_quarter_hour(datetime(2026, 11, 2, 0, 15, 1, tzinfo=UTC))
    assert not is_on_quarter_hour(datetime(2026, 11, 2, 0, 15, 0, 1, tzinfo=UTC))


def test_floor_and_ceil_answer_utc_grid_instants() -> None:
    at = datetime(2026, 11, 2, 0, 10, tzinfo=KATHMANDU)  # 18:25 UTC the day before
    assert floor_to_quarter_hour(at) == datetime(2026, 11, 1, 18, 15, tzinfo=UTC)
    assert ceil_to_quarter_hour(at) == datetime(2026, 11, 1, 18, 30, tzinfo=UTC)
    on_grid = datetime(2026, 11, 1, 18, 30, tzinfo=UTC)
    assert floor_to_quarter_hour(on_grid) == on_grid == ceil_to_quarter_hour(on_grid)
