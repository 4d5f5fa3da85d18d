"""Usage rows rendered by PostgreSQL (what HTTP answers send) are the very bytes the Python
rendering of the same answer encodes to: every window, group value (quotes, backslashes, a
percent sign, non-ASCII, absent), aggregation and number, whether the cube's cells are the
answer (a folded month by one key) or pieces are added up (windows, zones, pending rows)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec
import pytest

from service.common.auth import Principal
from service.db.session import create_engine
from service.rollups.fold import fold_rollups
from service.settings import Settings
from service.usage.schemas import MetersUsageOut, UsageQuery
from service.usage.service import UsageService
from tests.usage.conftest import Ev, store

ADMIN = Principal("test", "test", frozenset({"admin"}), None)
START = datetime(2026, 10, 1, tzinfo=UTC)
USERS = ['a"b', "back\\slash", "50%", "ünï", None, "plain"]
MODELS = ["gpt-4o", "claude", None]


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[UsageService]:
    engine = create_engine(settings, settings.database_url)
    try:
        yield UsageService(engine)
    finally:
        await engine.dispose()


def month_of_events() -> list[Ev]:
    events = []
    for index in range(240):
        user = USERS[index % len(USERS)]
        model = MODELS[index % len(MODELS)]
        attribution = {"user_id": user, "model": model}
        ts = START + timedelta(hours=index * 3 + index % 4, minutes=15 * (index % 4))
        meter = ("input_tokens", "api_calls", "seats")[index % 3]
        value = None if meter == "api_calls" else Decimal(index * 7 % 13) - Decimal("2.5")
        if meter == "seats" and index % 5 == 0:
            value = None  # a last event without a value
        dimensions = {"region": "eu" if index % 2 else "us"} if meter != "api_calls" else {}
        events.append(Ev("acme", meter, ts, value, f"k{index}", attribution, dimensions=dimensions))
    return events


QUERIES: list[dict[str, Any]] = [
    {"group_by": ["user_id"]},
    {"group_by": ["model", "user_id"]},
    {"group_by": ["user_id", "model"], "filters": ["model:gpt-4o"]},
    {"group_by": ["region"]},
    {"group_by": ["user_id"], "window_size": "day", "timezone": "Europe/Berlin"},
    {"group_by": ["model"], "window_size": "day", "timezone": "Asia/Kathmandu"},
    {"window_size": "hour", "filters": ["user_id:50%"]},
    {},
]


async def both(service: UsageService, **params: Any) -> tuple[bytes, bytes]:
    query = UsageQuery(
        tenant_id="acme", start="2026-10-01T00:00:00Z", end="2026-11-01T00:00:00Z", **params
    )
    in_python = await service.usage(ADMIN, query)
    in_db = await service.usage(ADMIN, query, encoded_rows=True)
    return msgspec.json.encode(in_python), msgspec.json.encode(in_db)


async def test_rows_rendered_in_db_equal_python_rendering(
    world: dict[str, int], pg_pool: asyncpg.Pool, service: UsageService
) -> None:
    await store(pg_pool, world, month_of_events())
    for folded in (False, True):
        if folded:
            async with pg_pool.acquire() as connection:
                assert await fold_rollups(connection) > 0
        for params in QUERIES:
            in_python, in_db = await both(service, **params)
            assert in_db == in_python, (folded, params)
            assert msgspec.json.decode(in_db)["meters"][0]["rows"] or params.get("filters")
        # One meter too (its rows at the top level).
        in_python, in_db = await both(service, meter="seats", group_by=["user_id"])
        assert in_db == in_python
    in_python, in_db = await both(service, group_by=["user_id"])
    for text in ('"user_id":"a\\"b"', '"user_id":"back\\\\slash"', '"user_id":"ünï"'):
        assert text.encode() in in_db, text
    assert b'"user_id":null' in in_db and b'"last":null' in in_db


async def test_ranked_answers_keep_python_rendering(
    world: dict[str, int], pg_pool: asyncpg.Pool, service: UsageService
) -> None:
    """order_by and limit rank rows by value in Python: the rows stay a list there."""
    await store(pg_pool, world, month_of_events())
    query = UsageQuery(
        tenant_id="acme", period="2026-10", group_by=["user_id"], order_by="-value", limit=1
    )
    answer = await service.usage(ADMIN, query, encoded_rows=True)
    assert isinstance(answer, MetersUsageOut)
    assert isinstance(answer.meters[0].rows, list)
    assert len(answer.meters[0].rows) == 1 and answer.truncated
