"""Usage over HTTP end to end: events posted to /v1/events/batch, read back by window and
group, for one meter, every meter, and the per-tenant summary; the coarse model rollups stay
equal to the full-key rollups through ingestion and rebuilds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.db.session import create_engine
from service.events.repository import store_events
from service.rollups.query import AVERAGE_SQL
from service.rollups.rebuild import rebuild_tenant_rollups
from service.settings import Settings
from tests.conftest import Keys
from tests.usage.conftest import Client, Ev, event_rows, store, usage

# Recent enough for the API's late-arrival window, on a quarter hour, in the past.
NOW = datetime.now(UTC)
BASE = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(days=2)


def at(minutes: float) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat()


async def post(client: Client, key: dict[str, str], events: list[dict[str, Any]]) -> None:
    response = await client.post("/v1/events/batch", json={"events": events}, headers=key)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events), response.text


@pytest.fixture
async def ingested(client: Client, keys: Keys, world: dict[str, int]) -> None:
    key = await keys.make("ingest")
    tokens = [
        # minute, value, model, user, region
        (1, "10", "gpt-4o", "u1", "eu"),
        (2, "0.5", "gpt-4o", "u2", None),
        (20, "7", "llama", "u1", "us"),
        (61, "100", None, "u3", "eu"),
        (61, "1", "gpt-4o", "u1", "eu"),
    ]
    await post(
        client,
        key,
        [
            {
                "tenant_id": "acme",
                "event_name": "input_tokens",
                "idempotency_key": f"t{i}",
                "timestamp": at(minute),
                "value": value,
                **({"model": model} if model else {}),
                "user_id": user,
                **({"dimensions": {"region": region}} if region else {}),
            }
            for i, (minute, value, model, user, region) in enumerate(tokens)
        ],
    )
    await post(
        client,
        key,
        [
            {
                "tenant_id": "acme",
                "event_name": "api_calls",
                "idempotency_key": f"c{i}",
                "timestamp": at(i * 30),
            }
            for i in range(4)
        ]
        + [
            # Two seat counts at the same instant: the later-stored one is `last`.
            {
                "tenant_id": "acme",
                "event_name": "seats",
                "idempotency_key": "s1",
                "timestamp": at(5),
                "value": "3",
            },
            {
                "tenant_id": "acme",
                "event_name": "seats",
                "idempotency_key": "s2",
                "timestamp": at(5),
                "value": "4",
            },
            {
                "tenant_id": "acme",
                "event_name": "seats",
                "idempotency_key": "s0",
                "timestamp": at(4),
                "value": "9",
            },
            # Another tenant's usage never shows.
            {
                "tenant_id": "globex",
                "event_name": "input_tokens",
                "idempotency_key": "g1",
                "timestamp": at(1),
                "value": "5000",
            },
        ],
    )


RANGE = {"tenant_id": "acme", "from_": at(0), "to": at(180), "timezone": "UTC"}


@pytest.mark.usefixtures("ingested")
async def test_one_meter_by_hour_and_model(client: Client, reader: dict[str, str]) -> None:
    answer = await usage(
        client, reader, meter="input_tokens", window_size="hour", group_by="model", **RANGE
    )
    assert (answer["meter"], answer["aggregation"], answer["unit"]) == (
        "input_tokens",
        "sum",
        "units",
    )
    assert answer["group_by"] == ["model"]
    rows = [
        (r["window_start"], r["group"]["model"], r["value"], r["count"], r["last"], r["avg"])
        for r in answer["rows"]
    ]
    first, second = (BASE + timedelta(hours=h) for h in (0, 1))
    iso = [t.isoformat().replace("+00:00", "Z") for t in (first, second)]
    assert rows == [
        (iso[0], "gpt-4o", "10.5", 2, "0.5", "5.25"),
        (iso[0], "llama", "7", 1, "7", "7"),
        (iso[1], None, "100", 1, "100", "100"),  # absent model: null, ordered first
        (iso[1], "gpt-4o", "1", 1, "1", "1"),
    ]
    assert answer["rows"][0]["window_end"] == iso[1]


@pytest.mark.usefixtures("ingested")
async def test_totals_without_window_and_with_filters(
    client: Client, reader: dict[str, str]
) -> None:
    total = await usage(client, reader, meter="input_tokens", **RANGE)
    assert [(r["group"], r["sum"], r["count"]) for r in total["rows"]] == [({}, "118.5", 5)]
    assert total["rows"][0]["window_start"] == total["from"]
    assert total["rows"][0]["window_end"] == total["to"]
    eu = await usage(
        client,
        reader,
        meter="input_tokens",
        group_by=["user_id", "region"],
        filter=["region:eu", "model:gpt-4o", "model:llama"],
        **RANGE,
    )
    assert [(r["group"], r["sum"]) for r in eu["rows"]] == [
        ({"user_id": "u1", "region": "eu"}, "11"),
    ]


@pytest.mark.usefixtures("ingested")
async def test_value_follows_the_aggregation_and_last_breaks_ties_by_event(
    client: Client, reader: dict[str, str]
) -> None:
    answer = await usage(client, reader, **RANGE)
    blocks = {b["meter"]: b for b in answer["meters"]}
    assert list(blocks) == ["api_calls", "input_tokens", "seats"]
    calls = blocks["api_calls"]["rows"][0]
    assert (calls["value"], calls["count"], calls["sum"], calls["last"]) == ("4", 4, "0", None)
    seats = blocks["seats"]["rows"][0]
    assert (seats["value"], seats["last"], seats["sum"], seats["count"]) == ("4", "4", "16", 3)
    assert seats["avg"] == "5.333333333333"


@pytest.mark.usefixtures("ingested")
async def test_every_meter_and_the_summary(client: Client, reader: dict[str, str]) -> None:
    answer = await usage(client, reader, window_size="day", group_by="model", **RANGE)
    assert set(answer) >= {"tenant_id", "from", "to", "window_size", "timezone", "meters"}
    assert [b["meter"] for b in answer["meters"]] == ["api_calls", "input_tokens", "seats"]
    response = await client.get(
        "/v1/usage/summary",
        params={"tenant_id": "acme", "from": at(0), "to": at(180), "group_by": "user_id"},
        headers=reader,
    )
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["timezone"] == "Europe/Berlin"  # the tenant's
    tokens = next(b for b in summary["meters"] if b["meter"] == "input_tokens")
    assert [(r["group"]["user_id"], r["sum"]) for r in tokens["rows"]] == [
        ("u1", "18"),
        ("u2", "0.5"),
        ("u3", "100"),
    ]


async def test_empty_range_has_blocks_without_rows(
    client: Client, reader: dict[str, str], world: dict[str, int]
) -> None:
    answer = await usage(client, reader, window_size="hour", **RANGE)
    assert [(b["meter"], b["rows"]) for b in answer["meters"]] == [
        ("api_calls", []),
        ("input_tokens", []),
        ("seats", []),
    ]


AVG_CONTEXT = Context(prec=200, rounding=ROUND_HALF_UP)


def naive_average(total: Decimal, count: int) -> str:
    """sum / count exactly, rounded half-up to 12 places, trailing zeros removed."""
    rounded = AVG_CONTEXT.divide(total, Decimal(count)).quantize(
        Decimal("1e-12"), context=AVG_CONTEXT
    )
    return format(rounded.normalize(AVG_CONTEXT), "f")


async def rendered_average(pg_pool: asyncpg.Pool, total: Decimal, count: int) -> str:
    sql = f"SELECT {AVERAGE_SQL} FROM (SELECT $1::numeric AS sum, $2::bigint AS count) AS c"
    value: str = await pg_pool.fetchval(sql, total, count)
    return value


async def test_average_is_rounded_half_up_to_12_places(pg_pool: asyncpg.Pool) -> None:
    assert await rendered_average(pg_pool, Decimal(2), 3) == "0.666666666667"
    assert await rendered_average(pg_pool, Decimal(1), 3) == "0.333333333333"
    assert await rendered_average(pg_pool, Decimal("300.000"), 3) == "100"
    assert await rendered_average(pg_pool, Decimal(0), 5) == "0"
    assert await rendered_average(pg_pool, Decimal("1E+30"), 1) == "1" + "0" * 30
    assert await rendered_average(pg_pool, Decimal("0.0000000000005"), 1) == "0.000000000001"
    assert await rendered_average(pg_pool, Decimal("0.0000000000004999"), 1) == "0"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    total=st.integers(min_value=0, max_value=18).flatmap(
        lambda places: st.decimals(min_value=0, max_value=Decimal("1e40"), places=places)
    ),
    count=st.integers(min_value=1, max_value=10**12),
)
async def test_the_rendered_average_equals_exact_division(
    pg_pool: asyncpg.Pool, total: Decimal, count: int
) -> None:
    assert await rendered_average(pg_pool, total, count) == naive_average(total, count)


MODEL_ROLLUPS = (
    "SELECT tenant_id, meter_id, bucket_start, model, dimensions::text, sum, count, "
    "last_value, last_ts, last_event_id FROM model_rollups ORDER BY 1, 2, 3, 4, 5"
)
FOLDED = (
    "SELECT tenant_id, meter_id, bucket_start, model, dimensions::text, sum(sum), "
    "sum(count)::bigint, "
    "(array_agg(last_value ORDER BY last_ts DESC, last_event_id DESC))[1], max(last_ts), "
    "(array_agg(last_event_id ORDER BY last_ts DESC, last_event_id DESC))[1] "
    "FROM rollups GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
)


@pytest.mark.usefixtures("ingested")
async def test_model_rollups_survive_a_rebuild(
    client: Client,
    settings: Settings,
    pg_pool: asyncpg.Pool,
    reader: dict[str, str],
) -> None:
    before = [tuple(r) for r in await pg_pool.fetch(MODEL_ROLLUPS)]
    assert before == [tuple(r) for r in await pg_pool.fetch(FOLDED)]
    answer = await usage(client, reader, meter="input_tokens", group_by="model", **RANGE)
    # Damage both tables, then rebuild acme's range from raw events.
    await pg_pool.execute(
        "UPDATE rollup_rows SET sums = array_fill(1::numeric, ARRAY[cardinality(meter_ids)]) "
        "WHERE tenant_id = 'acme'"
    )
    await pg_pool.execute("DELETE FROM model_rollup_rows WHERE tenant_id = 'acme'")
    engine = create_engine(settings, settings.database_url)
    try:
        report = await rebuild_tenant_rollups(
            engine, settings, "acme", BASE, BASE + timedelta(days=1)
        )
    finally:
        await engine.dispose()
    assert report.rollups_written > 0
    assert [tuple(r) for r in await pg_pool.fetch(MODEL_ROLLUPS)] == before
    again = await usage(client, reader, meter="input_tokens", group_by="model", **RANGE)
    assert again == answer


async def test_backfilled_ranges_read_the_same_from_both_tables(
    client: Client, reader: dict[str, str], world: dict[str, int], pg_pool: asyncpg.Pool
) -> None:
    """Grouping by model alone reads model_rollups; adding a filter on user_id that every event
    matches reads the full-key rollups: the answers agree."""
    events = [
        Ev(
            "acme",
            "input_tokens",
            datetime(2026, 3, 29, 0, 0, tzinfo=UTC) + timedelta(minutes=7 * i),
            Decimal(i),
            f"b{i}",
            {"model": ["a", "b", None][i % 3], "user_id": "u"},
            {"region": "eu"} if i % 2 else {},
        )
        for i in range(60)
    ]
    await store(pg_pool, world, events[:30])
    await store(pg_pool, world, events[30:])
    common = {
        "tenant_id": "acme",
        "meter": "input_tokens",
        "from_": "2026-03-28T00:00:00Z",
        "to": "2026-03-30T00:00:00Z",
        "window_size": "hour",
    }
    coarse = await usage(client, reader, group_by=["model", "region"], **common)
    fine = await usage(client, reader, group_by=["model", "region"], filter="user_id:u", **common)
    assert coarse["rows"] == fine["rows"]
    assert len(coarse["rows"]) > 10


async def test_ingestion_writes_model_rollups_after_rollups(
    world: dict[str, int], pg_pool: asyncpg.Pool
) -> None:
    """Every batch of a tenant touches the same few model rollup rows, so ingestion upserts
    them last (shortest lock hold before commit). A constraint every new row violates, added
    to both tables in a rolled-back transaction, shows which upsert runs first."""
    event = Ev("acme", "input_tokens", NOW - timedelta(minutes=5), Decimal(1), "probe")
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        async with pg_pool.acquire() as connection, connection.transaction():
            for table in ("rollup_rows", "model_rollup_rows"):
                await connection.execute(f"ALTER TABLE {table} ADD CONSTRAINT probe CHECK (false)")
            await store_events(connection, event_rows(world, [event]))
    assert caught.value.table_name == "rollup_rows"
