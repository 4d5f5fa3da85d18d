"""Canceling an accepted event: it leaves usage and budgets at once, stays listed as canceled,
keeps its idempotency key taken; idempotent, tenant-bound, scoped, safe under concurrency."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from service.app import create_app
from service.common.time import floor_to_quarter_hour
from service.events.repository import EventRow, store_events
from service.rollups.fold import fold_rollups
from service.rollups.levels import ORG
from service.rollups.upkeep import rebuild_rollups
from tests.conftest import Keys, make_settings
from tests.events.conftest import Client, EventFactory, recent
from tests.invoices.conftest import create_meter, create_price
from tests.support.in_loop import in_loop_client
from tests.support.problems import assert_problem

pytestmark = pytest.mark.usefixtures("seeded")


async def ingest(client: Client, key: dict[str, str], body: dict[str, Any]) -> str:
    response = await client.post("/v1/events", json=body, headers=key)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "accepted"
    return str(response.json()["id"])


async def cancel(
    client: Client, key: dict[str, str], event_id: str, tenant_id: str | None = "acme"
) -> Any:
    params = {} if tenant_id is None else {"tenant_id": tenant_id}
    return await client.post(f"/v1/events/{event_id}/cancel", params=params, headers=key)


async def usage(client: Client, key: dict[str, str], meter: str, **params: str) -> list[Any]:
    start = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    end = (datetime.now(UTC) + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    response = await client.get(
        "/v1/usage",
        params={
            "tenant_id": "acme",
            "meter": meter,
            "from": start.isoformat(),
            "to": end.isoformat(),
            **params,
        },
        headers=key,
    )
    assert response.status_code == 200, response.text
    return [
        (row["group"], row["value"], row["sum"], row["count"], row["last"])
        for row in response.json()["rows"]
    ]


async def test_cancel_takes_the_event_out_of_usage_and_marks_it(
    client: Client, keys: Keys, ingest_key: dict[str, str], event: EventFactory
) -> None:
    read = await keys.make("read", name="reader")
    first = await ingest(client, ingest_key, event(value="100", user_id="u1"))
    second = await ingest(client, ingest_key, event(value="40", user_id="u2"))
    assert await usage(client, read, "input_tokens") == [({}, "140", "140", 2, "40")]

    answer = await cancel(client, ingest_key, second)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == second and body["status"] == "canceled"
    assert await usage(client, read, "input_tokens") == [({}, "100", "100", 1, "100")]
    assert await usage(client, read, "input_tokens", group_by="user_id") == [
        ({"user_id": "u1"}, "100", "100", 1, "100")
    ]

    # Canceling again answers the same and changes nothing.
    again = await cancel(client, ingest_key, second)
    assert again.status_code == 200 and again.json() == body
    assert await usage(client, read, "input_tokens") == [({}, "100", "100", 1, "100")]

    listed = await client.get("/v1/events", params={"tenant_id": "acme"}, headers=read)
    assert listed.status_code == 200, listed.text
    by_id = {item["id"]: item for item in listed.json()["items"]}
    assert by_id[second]["status"] == "canceled"
    assert by_id[second]["canceled_at"] == body["canceled_at"]
    assert by_id[first]["status"] == "accepted" and by_id[first]["canceled_at"] is None


async def test_idempotency_key_stays_taken_and_filter_finds_it(
    client: Client, keys: Keys, ingest_key: dict[str, str], event: EventFactory
) -> None:
    read = await keys.make("read", name="reader")
    body = event(value="7", idempotency_key="order-17")
    event_id = await ingest(client, ingest_key, body)
    await ingest(client, ingest_key, event(value="1", idempotency_key="order-18"))
    assert (await cancel(client, ingest_key, event_id)).status_code == 200

    again = await client.post("/v1/events", json=body, headers=ingest_key)
    assert again.status_code == 202 and again.json() == {"id": event_id, "status": "duplicate"}
    other = await client.post("/v1/events", json={**body, "value": "8"}, headers=ingest_key)
    assert_problem(other, 409, "idempotency_conflict")
    batch = await client.post("/v1/events/batch", json={"events": [body]}, headers=ingest_key)
    assert batch.json()["duplicates"] == 1
    assert await usage(client, read, "input_tokens") == [({}, "1", "1", 1, "1")]

    found = await client.get(
        "/v1/events", params={"tenant_id": "acme", "idempotency_key": "order-17"}, headers=read
    )
    assert found.status_code == 200, found.text
    items = found.json()["items"]
    assert [(i["id"], i["status"], i["value"]) for i in items] == [(event_id, "canceled", "7")]
    none = await client.get(
        "/v1/events", params={"tenant_id": "acme", "idempotency_key": "order-1"}, headers=read
    )
    assert none.json()["items"] == []


async def test_unknown_other_tenant_and_scope(
    client: Client, keys: Keys, ingest_key: dict[str, str], event: EventFactory
) -> None:
    globex_event = await ingest(client, ingest_key, event(tenant_id="globex"))
    acme_event = await ingest(client, ingest_key, event())
    acme_key = await keys.make("ingest", name="acme-gateway", tenant_id="acme")

    assert_problem(await cancel(client, acme_key, globex_event, tenant_id=None), 404, "not_found")
    assert_problem(
        await cancel(client, ingest_key, "999999999", tenant_id="acme"), 404, "not_found"
    )
    assert_problem(await cancel(client, acme_key, "not-a-number"), 404, "not_found")
    assert_problem(await cancel(client, acme_key, "0"), 404, "not_found")
    # A key bound to no tenant names it; a bound key may not name another.
    assert_problem(
        await cancel(client, ingest_key, acme_event, tenant_id=None), 422, "validation_error"
    )
    assert_problem(
        await cancel(client, acme_key, globex_event, tenant_id="globex"), 403, "forbidden"
    )
    read = await keys.make("read", name="reader")
    assert_problem(await cancel(client, read, acme_event, tenant_id="acme"), 403, "forbidden")
    billing = await keys.make("billing", name="finance")
    assert_problem(await cancel(client, billing, acme_event, tenant_id="acme"), 403, "forbidden")
    # Nothing was canceled by the refusals.
    assert (await cancel(client, acme_key, acme_event)).status_code == 200
    assert (await cancel(client, ingest_key, globex_event, tenant_id="globex")).status_code == 200


async def test_concurrent_cancels_of_one_event_count_once(
    client: Client, keys: Keys, event: EventFactory, database_url: str, pg_pool: asyncpg.Pool
) -> None:
    """Cancels of one event racing each other, ingestion into the same rollup row and a fold:
    the event comes off exactly once (requests really overlap: an ASGI client on this loop)."""
    read = await keys.make("read", name="reader")
    acme_key = await keys.make("ingest", name="acme-gateway", tenant_id="acme")
    for value in ("5", "6", "7"):
        await ingest(client, acme_key, event(value=value))
    target = await ingest(client, acme_key, event(value="100"))
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection)

    async def fold() -> int:
        async with pg_pool.acquire() as connection:
            return await fold_rollups(connection)

    async with in_loop_client(create_app(make_settings(database_url))) as racing:
        answers = await asyncio.gather(
            *(racing.post(f"/v1/events/{target}/cancel", headers=acme_key) for _ in range(6)),
            *(racing.post("/v1/events", json=event(value="1"), headers=acme_key) for _ in range(4)),
            fold(),
        )
    cancels, ingests = answers[:6], answers[6:10]
    assert all(a.status_code == 200 for a in cancels), [a.text for a in cancels]
    assert len({a.json()["canceled_at"] for a in cancels}) == 1
    assert all(a.status_code == 202 for a in ingests)
    assert await usage(client, read, "input_tokens") == [({}, "22", "22", 7, "1")]
    await fold()
    assert await usage(client, read, "input_tokens") == [({}, "22", "22", 7, "1")]


async def test_budget_used_drops(client: Client, keys: Keys, ingest_key: dict[str, str]) -> None:
    billing = await keys.make("billing", name="finance")
    answer = await client.post(
        "/v1/budgets",
        json={
            "tenant_id": "acme",
            "name": "daily tokens",
            "period": "day",
            "limit": {"meter": "input_tokens", "quantity": "1000"},
        },
        headers=billing,
    )
    assert answer.status_code == 201, answer.text
    now = datetime.now(UTC).isoformat()
    ids = [
        await ingest(
            client,
            ingest_key,
            {
                "tenant_id": "acme",
                "event_name": "input_tokens",
                "idempotency_key": f"b-{value}",
                "timestamp": now,
                "value": value,
            },
        )
        for value in ("300", "200")
    ]

    async def used() -> str:
        check = await client.get(
            "/v1/budgets/check", params={"tenant_id": "acme"}, headers=ingest_key
        )
        assert check.status_code == 200, check.text
        return str(check.json()["budgets"][0]["used"])

    assert await used() == "500"
    assert (await cancel(client, ingest_key, ids[0], tenant_id="acme")).status_code == 200
    assert await used() == "200"
    assert (await cancel(client, ingest_key, ids[0], tenant_id="acme")).status_code == 200
    assert await used() == "200"


async def test_cost_budget_used_drops(
    client: Client, keys: Keys, ingest_key: dict[str, str]
) -> None:
    """A cost budget's cells lose the canceled event's quantity, found as ingestion keyed
    them (here by the `region` a price matches on), so `used` equals the costs of what is
    left."""
    await create_price(client, keys, "input_tokens", unit_amount="0.01")
    await create_price(client, keys, "input_tokens", unit_amount="0.02", match={"region": "us"})
    billing = await keys.make("billing", name="finance")
    answer = await client.post(
        "/v1/budgets",
        json={"tenant_id": "acme", "name": "spend", "period": "month", "limit": {"cost": "50"}},
        headers=billing,
    )
    assert answer.status_code == 201, answer.text
    now = datetime.now(UTC).isoformat()
    ids = [
        await ingest(
            client,
            ingest_key,
            {
                "tenant_id": "acme",
                "event_name": "input_tokens",
                "idempotency_key": f"c-{region}",
                "timestamp": now,
                "value": value,
                "dimensions": {"region": region},
            },
        )
        for value, region in (("300", "eu"), ("200", "us"))
    ]

    async def used() -> str:
        check = await client.get(
            "/v1/budgets/check", params={"tenant_id": "acme"}, headers=ingest_key
        )
        assert check.status_code == 200, check.text
        return str(check.json()["budgets"][0]["used"])

    assert await used() == "7.000000000000"  # 300 x 0.01 + 200 x 0.02
    assert (await cancel(client, ingest_key, ids[1], tenant_id="acme")).status_code == 200
    assert await used() == "3.000000000000"
    costs = await client.get(
        "/v1/costs", params={"tenant_id": "acme", "period": "this_month"}, headers=billing
    )
    assert costs.status_code == 200, costs.text
    assert costs.json()["total"] == "3.000000000000"


async def test_max_and_unique_count_meters_lose_a_canceled_event(
    client: Client, keys: Keys, ingest_key: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    """The largest value and the distinct count are recomputed without the event, before and
    after the fold has taken the rows into the coarse levels."""
    read = await keys.make("read", name="reader")
    await create_meter(client, keys, "peak", "Peak", "max")
    await create_meter(client, keys, "active", "Active users", "unique_count", unique_key="user_id")
    when = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    sent = {}
    for name, value, user in (("peak", 5, "u1"), ("peak", 9, "u2"), ("active", None, "u1"),
                              ("active", None, "u2")):  # fmt: skip
        body = {"tenant_id": "acme", "event_name": name, "idempotency_key": f"{name}-{user}",
                "timestamp": when, "user_id": user}  # fmt: skip
        if value is not None:
            body["value"] = value
        sent[(name, user)] = await ingest(client, ingest_key, body)
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection)
    assert [row[1] for row in await usage(client, read, "peak")] == ["9"]
    assert [row[1] for row in await usage(client, read, "active")] == ["2"]
    for key in (("peak", "u2"), ("active", "u2")):
        answer = await cancel(client, ingest_key, sent[key], tenant_id="acme")
        assert answer.status_code == 200, answer.text
    assert [row[1] for row in await usage(client, read, "peak")] == ["5"]
    assert [row[1] for row in await usage(client, read, "active")] == ["1"]
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection)
    assert [row[1] for row in await usage(client, read, "peak")] == ["5"]
    assert [row[1] for row in await usage(client, read, "active")] == ["1"]


async def test_cancel_after_fold_stays_exact(
    client: Client,
    keys: Keys,
    ingest_key: dict[str, str],
    event: EventFactory,
    pg_pool: asyncpg.Pool,
) -> None:
    """Folded rows: a sum meter's event comes off the cube as a negative delta folded at once;
    a `last` meter's, an emptied row's or a cell's latest event resets the month of the cube;
    reads are exact throughout."""
    read = await keys.make("read", name="reader")
    acme_key = await keys.make("ingest", name="acme-gateway", tenant_id="acme")
    ts = recent(180)
    later = recent(170)
    kept = await ingest(client, acme_key, event(value="10", timestamp=ts))
    gone = await ingest(client, acme_key, event(value="30", timestamp=ts))
    lone = await ingest(client, acme_key, event(value="5", timestamp=ts, user_id="u9"))
    latest = await ingest(client, acme_key, event(value="2", timestamp=later))
    seat_old = await ingest(client, acme_key, event(event_name="seats", value="3", timestamp=ts))
    seat_new = await ingest(client, acme_key, event(event_name="seats", value="9", timestamp=later))
    async with pg_pool.acquire() as connection:
        assert await fold_rollups(connection) > 0
    assert await usage(client, read, "input_tokens") == [({}, "47", "47", 4, "2")]

    assert (await cancel(client, acme_key, gone)).status_code == 200  # negative delta
    assert await pg_pool.fetchval("SELECT count(*) FROM rollup_rows WHERE pending") == 0
    assert await pg_pool.fetchval("SELECT count(*) FROM rollup_cube") > 0
    assert await usage(client, read, "input_tokens") == [({}, "17", "17", 3, "2")]
    assert (await cancel(client, acme_key, lone)).status_code == 200  # its row empties: reset
    assert (await cancel(client, acme_key, latest)).status_code == 200  # a cube cell's latest
    assert await usage(client, read, "input_tokens") == [({}, "10", "10", 1, "10")]
    assert await usage(client, read, "input_tokens", group_by="user_id") == [
        ({"user_id": "u1"}, "10", "10", 1, "10")
    ]
    assert (await cancel(client, acme_key, seat_new)).status_code == 200
    assert await usage(client, read, "seats") == [({}, "3", "3", 1, "3")]
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection)
    assert await usage(client, read, "input_tokens") == [({}, "10", "10", 1, "10")]
    assert await usage(client, read, "seats") == [({}, "3", "3", 1, "3")]
    assert await pg_pool.fetchval("SELECT count(*) FROM rollup_rows WHERE pending") == 0
    assert await pg_pool.fetchval("SELECT count(*) FROM rollup_cube WHERE count <= 0") == 0
    assert kept and seat_old


async def test_too_old_to_cancel(
    client: Client, ingest_key: dict[str, str], seeded: dict[str, int], pg_pool: asyncpg.Pool
) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    row = EventRow(
        tenant_id="acme",
        meter_id=seeded["input_tokens"],
        idempotency_key="ancient",
        payload_hash=hashlib.sha256(b"ancient").digest(),
        value=Decimal(3),
        ts=old,
        org_id=None,
        project_id=None,
        api_key_id=None,
        user_id=None,
        model=None,
        dimensions_json="{}",
        metadata_json=None,
    )
    async with pg_pool.acquire() as connection, connection.transaction():
        stored = await store_events(connection, [row])
    event_id = str(stored[("acme", "ancient")].id)
    answer = await cancel(client, ingest_key, event_id, tenant_id="acme")
    assert_problem(answer, 409, "cancel_window_closed")
    assert (
        await pg_pool.fetchval("SELECT canceled_at FROM events WHERE id = $1", int(event_id))
        is None
    )


async def test_a_rebuild_leaves_canceled_events_out(
    client: Client, keys: Keys, event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    read = await keys.make("read", name="reader")
    acme_key = await keys.make("ingest", name="acme-gateway", tenant_id="acme")
    await ingest(client, acme_key, event(value="10"))
    gone = await ingest(
        client,
        acme_key,
        event(values={"input_tokens": "5", "api_calls": None}, event_name=..., value=...),
    )
    await ingest(client, acme_key, event(event_name="api_calls", value=...))
    assert (await cancel(client, acme_key, gone)).status_code == 200
    before = await usage(client, read, "input_tokens"), await usage(client, read, "api_calls")
    assert before == ([({}, "10", "10", 1, "10")], [({}, "1", "0", 1, None)])
    start = floor_to_quarter_hour(datetime.now(UTC) - timedelta(days=1))
    async with pg_pool.acquire() as connection, connection.transaction():
        await rebuild_rollups(connection, "acme", start, start + timedelta(days=2))
    after = await usage(client, read, "input_tokens"), await usage(client, read, "api_calls")
    assert after == before


async def test_rollups_older_than_a_meter_dimension_are_rebuilt_first(
    client: Client, keys: Keys, event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    """A `values` event is split by the dimensions each meter declares; once a meter declares
    one more, its rows no longer match the split: the cancel refuses until a rebuild."""
    read = await keys.make("read", name="reader")
    acme_key = await keys.make("ingest", name="acme-gateway", tenant_id="acme")
    values = {"input_tokens": "5", "api_calls": None}
    body = event(values=values, event_name=..., value=..., dimensions={"region": "eu"})
    event_id = await ingest(client, acme_key, body)
    await pg_pool.execute(
        "UPDATE meters SET dimensions = '{region}' WHERE event_name = 'api_calls'"
    )
    assert_problem(await cancel(client, acme_key, event_id), 409, "rollups_out_of_date")
    assert await usage(client, read, "api_calls") == [({}, "1", "0", 1, None)]
    start = floor_to_quarter_hour(datetime.now(UTC) - timedelta(days=1))
    async with pg_pool.acquire() as connection, connection.transaction():
        await rebuild_rollups(connection, "acme", start, start + timedelta(days=2))
    assert (await cancel(client, acme_key, event_id)).status_code == 200
    assert await usage(client, read, "api_calls") == []
    assert await usage(client, read, "input_tokens") == []


async def test_an_event_after_a_cancel_of_a_folded_row_is_folded_too(
    client: Client, keys: Keys, event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    """The fold finds a pending row by its count: a cancel lowering a folded row's count and an
    event raising it again must not leave the row looking folded with other sums."""
    read = await keys.make("read", name="reader")
    acme_key = await keys.make("ingest", name="acme-gateway", tenant_id="acme")
    ts = recent(180)
    # One row: the canceled event is neither alone in it nor its latest (same time, lower id).
    gone = await ingest(client, acme_key, event(value="4", timestamp=ts))
    for value in ("1", "2"):
        await ingest(client, acme_key, event(value=value, timestamp=ts))
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection)
    assert (await cancel(client, acme_key, gone)).status_code == 200
    await ingest(client, acme_key, event(value="100", timestamp=ts))
    expected = [({}, "103", "103", 3, "100")]
    assert await usage(client, read, "input_tokens") == expected
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection)
    assert await usage(client, read, "input_tokens") == expected
    assert await usage(client, read, "input_tokens", group_by="user_id") == [
        ({"user_id": "u1"}, "103", "103", 3, "100")
    ]
    # The month's cell of the org projection (every event has no org: one cell).
    cube = await pg_pool.fetchval(
        "SELECT sum FROM rollup_cube WHERE grain = 'm' AND projection = $1", ORG
    )
    assert cube == 103
