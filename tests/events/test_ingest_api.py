"""Ingestion over HTTP: validation, idempotency, tenant binding, durability, listing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

from tests.conftest import Keys
from tests.events.conftest import Client, EventFactory, recent
from tests.support.problems import assert_problem

pytestmark = pytest.mark.usefixtures("seeded")


async def post_one(client: Client, key: dict[str, str], body: Any) -> Any:
    return await client.post("/v1/events", json=body, headers=key)


async def post_batch(client: Client, key: dict[str, str], events: list[Any]) -> dict[str, Any]:
    response = await client.post("/v1/events/batch", json={"events": events}, headers=key)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def far_future() -> str:
    return (datetime.now(UTC) + timedelta(minutes=10)).isoformat()


def too_old() -> str:
    return (datetime.now(UTC) - timedelta(days=36)).isoformat()


INVALID_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # name, overrides, expected code, expected field
    ("unknown tenant", {"tenant_id": "nobody"}, "unknown_tenant", "tenant_id"),
    ("suspended tenant", {"tenant_id": "frozen"}, "tenant_suspended", "tenant_id"),
    ("unknown meter", {"event_name": "nope"}, "unknown_meter", "event_name"),
    ("archived meter", {"event_name": "old_meter"}, "meter_archived", "event_name"),
    (
        "undeclared dimension",
        {"dimensions": {"colour": "red"}},
        "undeclared_dimension",
        "dimensions.colour",
    ),
    ("float dimension", {"dimensions": {"region": 1.5}}, "invalid_field", "dimensions.region"),
    ("null dimension", {"dimensions": {"region": None}}, "invalid_field", "dimensions.region"),
    ("empty dimension", {"dimensions": {"region": ""}}, "invalid_field", "dimensions.region"),
    ("missing value for sum", {"value": ...}, "missing_value", "value"),
    ("missing value for last", {"event_name": "seats", "value": ...}, "missing_value", "value"),
    ("negative value", {"value": "-1"}, "invalid_value", "value"),
    ("NaN value", {"value": "NaN"}, "invalid_value", "value"),
    ("infinite value", {"value": "Infinity"}, "invalid_value", "value"),
    ("non-numeric value", {"value": "ten"}, "invalid_field", "value"),
    ("too many decimals", {"value": "0." + "1" * 19}, "invalid_value", "value"),
    ("future timestamp", {"timestamp": "FUTURE"}, "timestamp_in_future", "timestamp"),
    ("too old timestamp", {"timestamp": "OLD"}, "timestamp_too_old", "timestamp"),
    ("naive timestamp", {"timestamp": "2026-11-01T00:00:00"}, "invalid_timestamp", "timestamp"),
    ("not a timestamp", {"timestamp": "yesterday"}, "invalid_field", "timestamp"),
    ("empty idempotency key", {"idempotency_key": ""}, "invalid_field", "idempotency_key"),
    ("long idempotency key", {"idempotency_key": "k" * 256}, "invalid_field", "idempotency_key"),
    ("missing idempotency key", {"idempotency_key": ...}, "missing_field", "idempotency_key"),
    ("long user id", {"user_id": "u" * 256}, "invalid_field", "user_id"),
    ("empty model", {"model": ""}, "invalid_field", "model"),
    ("unknown field", {"colour": "red"}, "unknown_field", "colour"),
    ("missing tenant", {"tenant_id": ...}, "missing_tenant", "tenant_id"),
    # RFC 3339 with an offset only: a bare number is not read as seconds since 1970.
    ("Unix timestamp", {"timestamp": 1764547200}, "invalid_field", "timestamp"),
    # Text PostgreSQL cannot store is refused before the database, naming the field.
    ("NUL in model", {"model": "gpt\x004o"}, "invalid_text", "model"),
    ("NUL in tenant_id", {"tenant_id": "ac\x00me"}, "invalid_text", "tenant_id"),
    ("NUL in idempotency key", {"idempotency_key": "k\x00"}, "invalid_text", "idempotency_key"),
    ("NUL in dimension", {"dimensions": {"region": "eu\x00"}}, "invalid_text", "dimensions.region"),
    (
        "NUL in metadata",
        {"metadata": {"trace": [{"span": "a\x00"}]}},
        "invalid_text",
        "metadata.trace[0].span",
    ),
]


# Caught while decoding the body of a single event (a 422 validation_error naming the field);
# in a batch, each is the result of its own event.
SCHEMA_CODES = {"invalid_field", "missing_field", "unknown_field", "invalid_text"}


def _apply(event: EventFactory, overrides: dict[str, Any]) -> dict[str, Any]:
    overrides = dict(overrides)
    if overrides.get("timestamp") == "FUTURE":
        overrides["timestamp"] = far_future()
    if overrides.get("timestamp") == "OLD":
        overrides["timestamp"] = too_old()
    return event(**overrides)


@pytest.mark.parametrize(
    ("name", "overrides", "code", "field"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES]
)
async def test_invalid_single_event_is_422_naming_the_field(
    client: Client,
    ingest_key: dict[str, str],
    event: EventFactory,
    name: str,
    overrides: dict[str, Any],
    code: str,
    field: str,
) -> None:
    response = await post_one(client, ingest_key, _apply(event, overrides))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    if code in SCHEMA_CODES:
        # Shape errors of a single event are caught while decoding the body.
        assert problem["code"] == "validation_error"
        assert field in problem["detail"], problem
    else:
        assert problem["code"] == code
        assert problem["errors"][0]["field"].startswith(field)


async def test_invalid_events_of_a_batch_are_named_by_index_and_valid_ones_stored(
    client: Client, ingest_key: dict[str, str], event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    events: list[Any] = []
    expected: dict[int, tuple[str, str]] = {}
    for _name, overrides, code, field in INVALID_CASES:
        events.append(event())  # a valid one between each invalid one
        expected[len(events)] = (code, field)
        events.append(_apply(event, overrides))
    events.append("not an object")
    expected[len(events) - 1] = ("invalid_field", "")
    answer = await post_batch(client, ingest_key, events)
    assert answer["accepted"] == len(INVALID_CASES)
    assert answer["rejected"] == len(INVALID_CASES) + 1
    assert answer["duplicates"] == 0
    assert [r["index"] for r in answer["results"]] == list(range(len(events)))
    for result in answer["results"]:
        if result["index"] in expected:
            code, field = expected[result["index"]]
            assert result["status"] == "invalid", result
            assert result["error"]["code"] == code, result
            assert (result["error"].get("field") or "").startswith(field), result
        else:
            assert result["status"] == "accepted", result
    assert await pg_pool.fetchval("SELECT count(*) FROM events") == len(INVALID_CASES)


async def test_count_meter_takes_events_without_value(
    client: Client, ingest_key: dict[str, str], event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    response = await post_one(client, ingest_key, event(event_name="api_calls", value=...))
    assert response.status_code == 202, response.text
    row = await pg_pool.fetchrow("SELECT sum, count FROM rollups")
    assert row is not None and row["count"] == 1 and row["sum"] == 0


async def test_duplicate_and_conflict_single(
    client: Client, ingest_key: dict[str, str], event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    body = event(value="1.50", timestamp="2026-11-23T09:00:00+01:00")
    first = await post_one(client, ingest_key, body)
    assert first.status_code == 202 and first.json()["status"] == "accepted"
    # The same meaning spelled differently is still a duplicate.
    same = {**body, "value": 1.5, "timestamp": "2026-11-23T08:00:00Z"}
    again = await post_one(client, ingest_key, same)
    assert again.status_code == 202
    assert again.json() == {"id": first.json()["id"], "status": "duplicate"}
    other = await post_one(client, ingest_key, {**body, "value": "2"})
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_conflict"
    assert await pg_pool.fetchval("SELECT count(*) FROM events") == 1
    rollup = await pg_pool.fetchrow("SELECT sum, count FROM rollups")
    assert rollup is not None and (rollup["sum"], rollup["count"]) == (1.5, 1)


async def test_duplicate_and_conflict_in_batches(
    client: Client, ingest_key: dict[str, str], event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    a, b = event(value="3"), event(value="4")
    first = await post_batch(client, ingest_key, [a, b, a, {**b, "value": "5"}])
    assert [r["status"] for r in first["results"]] == [
        "accepted",
        "accepted",
        "duplicate",
        "conflict",
    ]
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (2, 1, 1)
    assert first["results"][2]["id"] == first["results"][0]["id"]
    second = await post_batch(client, ingest_key, [b, {**a, "value": "9"}, event(value="1")])
    assert [r["status"] for r in second["results"]] == ["duplicate", "conflict", "accepted"]
    assert second["results"][1]["error"]["code"] == "idempotency_conflict"
    assert await pg_pool.fetchval("SELECT sum(value) FROM events") == 8
    assert await pg_pool.fetchval("SELECT sum(sum) FROM rollups") == 8


async def test_batch_limits_and_bad_envelopes(
    client: Client, ingest_key: dict[str, str], event: EventFactory
) -> None:
    too_many = [event() for _ in range(1001)]
    response = await client.post("/v1/events/batch", json={"events": too_many}, headers=ingest_key)
    assert response.status_code == 413
    assert response.json()["code"] == "batch_too_large"
    for body in ({"evnts": []}, [], {"events": "x"}):
        response = await client.post("/v1/events/batch", json=body, headers=ingest_key)
        assert response.status_code == 422, body
    response = await client.post(
        "/v1/events/batch", content=b"{", headers={**ingest_key, "content-type": "application/json"}
    )
    assert response.status_code == 422
    empty = await post_batch(client, ingest_key, [])
    assert empty == {"accepted": 0, "duplicates": 0, "rejected": 0, "results": []}


async def test_tenant_bound_key(
    client: Client, keys: Keys, event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    bound = await keys.make("ingest", tenant_id="acme")
    implied = await post_one(client, bound, event(tenant_id=...))
    assert implied.status_code == 202, implied.text
    named = await post_one(client, bound, event(tenant_id="acme"))
    assert named.status_code == 202
    other = await post_one(client, bound, event(tenant_id="globex"))
    assert other.status_code == 403
    batch = await client.post(
        "/v1/events/batch", json={"events": [event(tenant_id="globex")]}, headers=bound
    )
    assert batch.status_code == 403
    assert await pg_pool.fetchval("SELECT count(*) FROM events WHERE tenant_id = 'globex'") == 0
    unbound = await keys.make("ingest")
    missing = await post_one(client, unbound, event(tenant_id=...))
    assert missing.status_code == 422 and missing.json()["code"] == "missing_tenant"


async def test_acknowledged_event_is_committed(
    client: Client, ingest_key: dict[str, str], event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    """A 2xx means the event is visible to any other connection: it was committed."""
    response = await post_one(client, ingest_key, event(idempotency_key="durable-1"))
    assert response.status_code == 202
    async with pg_pool.acquire() as other:
        row = await other.fetchrow(
            "SELECT id FROM events WHERE tenant_id = 'acme' AND idempotency_key = 'durable-1'"
        )
    assert row is not None and str(row["id"]) == response.json()["id"]


async def test_meter_is_marked_as_having_events(
    client: Client, ingest_key: dict[str, str], event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    assert not await pg_pool.fetchval("SELECT has_events FROM meters WHERE event_name = 'seats'")
    await post_one(client, ingest_key, event(event_name="seats", value="3"))
    assert await pg_pool.fetchval("SELECT has_events FROM meters WHERE event_name = 'seats'")


async def test_rollups_hold_sum_count_and_last_by_event_time(
    client: Client, ingest_key: dict[str, str], event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    # Arrival order differs from event-time order: the last value is the latest by time.
    values = [
        (base + timedelta(minutes=7), "5"),
        (base + timedelta(minutes=2), "9"),
        (base + timedelta(minutes=5), "1"),
    ]
    await post_batch(
        client,
        ingest_key,
        [event(event_name="seats", timestamp=ts.isoformat(), value=v) for ts, v in values],
    )
    row = await pg_pool.fetchrow(
        "SELECT sum, count, last_value, last_ts, bucket_start FROM rollups"
    )
    assert row is not None
    assert (row["sum"], row["count"], row["last_value"]) == (15, 3, 5)
    assert row["bucket_start"] == base
    await post_one(
        client,
        ingest_key,
        event(event_name="seats", timestamp=(base + timedelta(minutes=3)).isoformat(), value="2"),
    )
    row = await pg_pool.fetchrow("SELECT sum, count, last_value FROM rollups")
    assert row is not None and (row["sum"], row["count"], row["last_value"]) == (17, 4, 5)
    await post_one(
        client,
        ingest_key,
        event(event_name="seats", timestamp=(base + timedelta(minutes=14)).isoformat(), value="4"),
    )
    row = await pg_pool.fetchrow("SELECT count, last_value FROM rollups")
    assert row is not None and (row["count"], row["last_value"]) == (5, 4)
    assert await pg_pool.fetchval("SELECT count(*) FROM rollups") == 1


async def test_list_events_paginates_and_filters(
    client: Client, keys: Keys, ingest_key: dict[str, str], event: EventFactory
) -> None:
    await post_batch(
        client,
        ingest_key,
        [event(value=str(i)) for i in range(5)]
        + [event(event_name="seats", value="1"), event(tenant_id="globex")],
    )
    reader = await keys.make("read", tenant_id="acme")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "event_name": "input_tokens"}
        if cursor:
            params["cursor"] = cursor
        page = await client.get("/v1/events", params=params, headers=reader)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [item["value"] for item in body["items"]]
        assert all(item["tenant_id"] == "acme" for item in body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == ["4", "3", "2", "1", "0"]
    other = await client.get("/v1/events", params={"tenant_id": "globex"}, headers=reader)
    assert other.status_code == 403
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    empty = await client.get("/v1/events", params={"from": future}, headers=reader)
    assert empty.status_code == 200 and empty.json()["items"] == []
    bad = await client.get("/v1/events", params={"event_name": "nope"}, headers=reader)
    assert bad.status_code == 422
    assert (await client.get("/v1/events", headers=keys.admin)).status_code == 422


def test_recent_helper_is_recent() -> None:
    assert datetime.fromisoformat(recent()) < datetime.now(UTC)


async def test_batch_with_a_nul_in_one_event_stores_the_others(
    client: Client, ingest_key: dict[str, str], event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    events = [event(), event(model="gpt\x004o"), event()]
    answer = await post_batch(client, ingest_key, events)
    assert (answer["accepted"], answer["rejected"]) == (2, 1)
    middle = answer["results"][1]
    assert middle["index"] == 1
    assert middle["status"] == "invalid"
    assert middle["error"]["field"] == "model"
    assert "UTF8" not in middle["error"]["message"]
    assert await pg_pool.fetchval("SELECT count(*) FROM events") == 2


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch"])
async def test_invalid_utf8_body_is_422(
    client: Client, ingest_key: dict[str, str], path: str
) -> None:
    headers = {**ingest_key, "content-type": "application/json"}
    event = b'{"event_name": "\xff"}'
    body = b'{"events": [' + event + b"]}" if path.endswith("batch") else event
    response = await client.post(path, content=body, headers=headers)
    assert_problem(response, 422, "validation_error", "body")
    assert "UTF-8" in response.json()["detail"]


async def test_deeply_nested_body_is_422(
    client: Client, ingest_key: dict[str, str], event: EventFactory, pg_pool: asyncpg.Pool
) -> None:
    """Nesting beyond what the decoder recurses into is refused, never a 500. In a batch the
    events cannot even be told apart, so the batch as a whole is refused."""
    deep = b'{"k": ' * 5000 + b"1" + b"}" * 5000
    valid = msgspec.json.encode(event())
    nested = msgspec.json.encode(event(metadata={})).replace(
        b'"metadata":{}', b'"metadata":' + deep
    )
    headers = {**ingest_key, "content-type": "application/json"}
    batch = b'{"events": [' + valid + b"," + nested + b"]}"
    response = await client.post("/v1/events/batch", content=batch, headers=headers)
    assert_problem(response, 422, "validation_error", "body")
    single = await client.post("/v1/events", content=nested, headers=headers)
    assert_problem(single, 422, "validation_error", "body")
    assert "nested too deeply" in single.json()["detail"]
    assert await pg_pool.fetchval("SELECT count(*) FROM events") == 0
