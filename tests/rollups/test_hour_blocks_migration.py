"""The migration that adds three- and six-hour blocks to the cube fills them from the hour cells
already folded: per block and key, sums and counts added, the latest event (by time, then id)
and the largest value kept; hours stay as they were."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url

from alembic import command
from service.db.migrations import alembic_config
from service.rollups.levels import USER, Grain, grain_start
from tests.conftest import in_thread
from tests.test_migrations import scratch_database  # noqa: F401 (a fixture)

BEFORE_BLOCKS = "9a3d5c7e1f20"
COLUMNS = (
    "tenant_id, meter_id, grain, projection, bucket_start, org_id, project_id, api_key_id, "
    "user_id, model, dimensions, sum, count, last_value, last_ts, last_event_id, max_value"
)


def _run(url: str, statement: str, rows: list[tuple[Any, ...]] | None = None) -> list[Any]:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = psycopg2.connect(dsn)
    try:
        with connection, connection.cursor() as cursor:
            if rows is not None:
                cursor.executemany(statement, rows)
                return []
            cursor.execute(statement)
            return cursor.fetchall()
    finally:
        connection.close()


def test_blocks_are_filled_from_the_hour_cells(scratch_database: str) -> None:  # noqa: F811
    config = alembic_config(scratch_database)
    in_thread(command.upgrade, config, BEFORE_BLOCKS)
    random.seed(7)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    hours: list[tuple[Any, ...]] = []
    event_id = 0
    for hour in range(30):
        for user in ("u1", "u2"):
            if random.random() < 0.3:
                continue
            event_id += 1
            at = start + timedelta(hours=hour)
            last = at + timedelta(minutes=random.randrange(60))
            value = Decimal(random.randrange(-50, 50)) / 4
            peak = None if random.random() < 0.2 else Decimal(random.randrange(100))
            hours.append(
                ("t", 1, "h", USER, at, "", "", "", user, "", "{}", value, 3, value, last,
                 event_id, peak)
            )  # fmt: skip
    _run(
        scratch_database,
        f"INSERT INTO rollup_cube ({COLUMNS}) VALUES ({', '.join(['%s'] * 17)})",
        hours,
    )
    in_thread(command.upgrade, config, "head")

    expected: dict[tuple[str, datetime, str], list[Any]] = {}
    for grain in (Grain.HOURS_3, Grain.HOURS_6):
        cells: dict[tuple[str, datetime, str], list[tuple[Any, ...]]] = defaultdict(list)
        for row in hours:
            cells[(grain.value, grain_start(grain, row[4]), row[8])].append(row)
        for key, rows in cells.items():
            latest = max(rows, key=lambda r: (r[14], r[15]))
            peaks = [r[16] for r in rows if r[16] is not None]
            expected[key] = [
                sum(r[11] for r in rows),
                sum(r[12] for r in rows),
                latest[13],
                latest[14],
                latest[15],
                max(peaks) if peaks else None,
            ]
    found = {
        (grain, bucket, user): [total, count, last, last_ts, last_id, peak]
        for grain, bucket, user, total, count, last, last_ts, last_id, peak in _run(
            scratch_database,
            "SELECT grain, bucket_start, user_id, sum, count, last_value, last_ts, "
            "last_event_id, max_value FROM rollup_cube WHERE grain IN ('3', '6')",
        )
    }
    assert found == expected
    assert len([k for k in found if k[0] == "6"]) >= 8  # 30 hours: 5 blocks, 2 users
    assert _run(scratch_database, "SELECT count(*) FROM rollup_cube WHERE grain = 'h'") == [
        (len(hours),)
    ]
