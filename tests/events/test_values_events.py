"""`values` events: one LLM call, several meters' quantities, one event.

A values event must count exactly as the same quantities sent as separate single events (in
rollups, usage and invoices), be stored once under one idempotency key, be refused as a whole
when any quantity is invalid, and keep per meter only the dimensions that meter declares."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.rollups.fold import fold_rollups
from service.rollups.upkeep import rebuild_rollups
from tests.conftest import Keys, make_settings
from tests.support.in_loop import in_loop_client

Client = AsyncTestClient[Litestar]
SINCE = "2026-01-01T00:00:00Z"

CALL: dict[str, Any] = {
    "input_tokens": 1834,
    "output_tokens": "212",
    "cache_read_tokens": 5000,
    "cache_write_5m_tokens": 0,
    "latency_ms": "812.5",
    "llm_requests": None,
}
DIMENSIONS: dict[str, Any] = {
    "provider": "openai",
    "streamed": True,
    "status": "success",
    "user_tier": 2,
}


def when(minutes_ago: float = 10) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes_ago)


async def post(client: Client, path: str, body: Any, headers: dict[str, str]) -> Any:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code < 300, response.text
    return response.json()


@pytest.fixture
async def llm(client: Client, keys: Keys) -> dict[str, str]:
    """Tenants acme and globex (UTC), the LLM preset in USD, list prices for gpt-4o, and an
    ingest key."""
    for tenant in ("acme", "globex"):
        await post(client, "/v1/tenants", {"id": tenant, "name": tenant}, keys.admin)
    await post(client, "/v1/meters/presets/llm", {"currency": "USD"}, keys.admin)
    for meter, amount in (
        ("input_tokens", "2.50"),
        ("output_tokens", "10.00"),
        ("cache_read_tokens", "1.25"),
    ):
        body = {
            "meter": meter,
            "unit_amount": amount,
            "per_units": "1000000",
            "match": {"model": "gpt-4o"},
            "effective_from": SINCE,
        }
        await post(client, "/v1/prices", body, keys.admin)
    return await keys.make("ingest", "read", "billing", name="gateway")


def values_event(key: str, ts: datetime, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tenant_id": "acme",
        "idempotency_key": key,
        "timestamp": ts.isoformat(),
        "values": dict(CALL),
        "model": "gpt-4o",
        "user_id": "u1",
        "api_key_id": "k1",
        "dimensions": dict(DIMENSIONS),
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


async def rollups_of(pg_pool: asyncpg.Pool, tenant_id: str) -> list[tuple[Any, ...]]:
    rows = await pg_pool.fetch(
        "SELECT m.event_name, r.bucket_start, r.org_id, r.project_id, r.api_key_id, r.user_id,"
        " r.model, r.dimensions::text, r.sum, r.count, r.last_value"
        " FROM rollups r JOIN meters m ON m.id = r.meter_id WHERE r.tenant_id = $1"
        " ORDER BY 1, 2, 8",
        tenant_id,
    )
    return [tuple(row) for row in rows]


async def test_a_values_event_counts_as_the_same_quantities_sent_one_by_one(
    client: Client, llm: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    ts = when()
    for n in range(3):
        await post(client, "/v1/events", values_event(f"call-{n}", ts), llm)
    singles = [
        {
            "tenant_id": "globex",
            "idempotency_key": f"call-{n}-{name}",
            "timestamp": ts.isoformat(),
            "event_name": name,
            **({} if value is None else {"value": value}),
            "model": "gpt-4o",
            "user_id": "u1",
            "api_key_id": "k1",
            "dimensions": dict(DIMENSIONS),
        }
        for n in range(3)
        for name, value in CALL.items()
    ]
    answer = await post(client, "/v1/events/batch", {"events": singles}, llm)
    assert answer["accepted"] == 18
    assert await pg_pool.fetchval("SELECT count(*) FROM events WHERE tenant_id = 'acme'") == 3

    acme = await rollups_of(pg_pool, "acme")
    assert acme == await rollups_of(pg_pool, "globex")
    # Stored as one 15-minute row for all six meters of the three calls (one key), where the
    # single events, one meter each, take six.
    count_rows = "SELECT count(*) FROM rollup_rows WHERE tenant_id = $1"
    assert await pg_pool.fetchval(count_rows, "acme") == 1
    assert await pg_pool.fetchval(count_rows, "globex") == 6
    by_meter = {row[0]: row for row in acme}
    assert by_meter["input_tokens"][8:10] == (3 * 1834, 3)
    assert by_meter["llm_requests"][8:10] == (0, 3)
    assert by_meter["cache_write_5m_tokens"][8:10] == (0, 3)
    # Boolean and integer dimension values are stored as canonical strings.
    assert '"streamed": "true"' in by_meter["input_tokens"][7]
    assert '"user_tier": "2"' in by_meter["input_tokens"][7]

    hour = ts.replace(minute=0, second=0, microsecond=0)
    params = {
        "from": (hour - timedelta(hours=1)).isoformat(),
        "to": (hour + timedelta(hours=2)).isoformat(),
        "group_by": ["model", "streamed"],
    }
    for meter in CALL:
        usage = {}
        for tenant in ("acme", "globex"):
            response = await client.get(
                "/v1/usage", params={**params, "tenant_id": tenant, "meter": meter}, headers=llm
            )
            assert response.status_code == 200, response.text
            usage[tenant] = response.json()["rows"]
        assert usage["acme"] == usage["globex"], meter
        assert usage["acme"][0]["group"]["streamed"] == "true"

    period = ts.strftime("%Y-%m")
    invoices = {}
    for tenant in ("acme", "globex"):
        response = await client.get(
            f"/v1/tenants/{tenant}/invoices/preview", params={"period": period}, headers=llm
        )
        assert response.status_code == 200, response.text
        invoices[tenant] = [
            (line["meter"], line["quantity"], line["amount"])
            for invoice in response.json()
            for line in invoice["lines"]
        ]
    assert invoices["acme"] == invoices["globex"]
    # Billable meters only (latency and requests are not billable); 3 calls' tokens at
    # 1.25, 2.50 and 10.00 per million: 0.01875, 0.013755 and 0.00636, each line rounded.
    assert sorted(invoices["acme"]) == [
        ("cache_read_tokens", "15000", "0.02"),
        ("input_tokens", "5502", "0.01"),
        ("output_tokens", "636", "0.01"),
    ]


async def test_one_values_event_from_many_concurrent_clients_is_stored_once(
    database_url: str, llm: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    app = create_app(make_settings(database_url))
    body = values_event("the-call", when())
    async with in_loop_client(app) as concurrent:
        single = [concurrent.post("/v1/events", json=body, headers=llm) for _ in range(40)]
        batch = [
            concurrent.post("/v1/events/batch", json={"events": [body]}, headers=llm)
            for _ in range(10)
        ]
        responses = await asyncio.gather(*single, *batch)
    assert all(r.status_code < 300 for r in responses), [r.text for r in responses]
    statuses = [r.json()["status"] for r in responses[:40]]
    statuses += [r.json()["results"][0]["status"] for r in responses[40:]]
    assert statuses.count("accepted") == 1
    assert statuses.count("duplicate") == 49
    assert await pg_pool.fetchval("SELECT count(*) FROM events") == 1
    totals = await pg_pool.fetch(
        "SELECT m.event_name, sum(r.sum) AS s, sum(r.count) AS c FROM rollups r"
        " JOIN meters m ON m.id = r.meter_id GROUP BY 1"
    )
    assert {t["event_name"]: (t["s"], t["c"]) for t in totals} == {
        "input_tokens": (1834, 1),
        "output_tokens": (212, 1),
        "cache_read_tokens": (5000, 1),
        "cache_write_5m_tokens": (0, 1),
        "latency_ms": (812.5, 1),
        "llm_requests": (0, 1),
    }


async def test_the_same_key_with_other_quantities_is_a_conflict_and_a_respelling_a_duplicate(
    client: Client, llm: dict[str, str]
) -> None:
    ts = when()
    first = await post(client, "/v1/events", values_event("k", ts), llm)
    assert first["status"] == "accepted"
    # Same meaning, other spelling: numbers as strings, "true" for true, "2" for 2, reordered.
    respelled = values_event(
        "k",
        ts.astimezone(datetime.now().astimezone().tzinfo),
        values={**{k: CALL[k] for k in reversed(CALL)}, "input_tokens": "1834.00"},
        dimensions={**DIMENSIONS, "streamed": "true", "user_tier": "2"},
    )
    again = await post(client, "/v1/events", respelled, llm)
    assert again == {"id": first["id"], "status": "duplicate"}

    changed = values_event("k", ts, values={**CALL, "output_tokens": 213})
    response = await client.post("/v1/events", json=changed, headers=llm)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "idempotency_conflict"
    fewer = values_event("k", ts, values={k: v for k, v in CALL.items() if k != "latency_ms"})
    batch = await post(client, "/v1/events/batch", {"events": [fewer]}, llm)
    assert batch["results"][0]["status"] == "conflict"


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"values": {**CALL, "no_such_meter": 1}}, "unknown_meter", "values.no_such_meter"),
        ({"values": {**CALL, "output_tokens": None}}, "missing_value", "values.output_tokens"),
        ({"values": {**CALL, "input_tokens": -5}}, "invalid_value", "values.input_tokens"),
        ({"values": {**CALL, "input_tokens": "1e30"}}, "invalid_value", "values.input_tokens"),
        ({"values": {}}, "invalid_field", "values"),
        ({"values": {f"m{i}": 1 for i in range(33)}}, "invalid_field", "values"),
        ({"event_name": "input_tokens"}, "invalid_event", "event_name"),
        ({"value": 5}, "invalid_event", "value"),
        ({"values": ...}, "missing_field", "event_name"),
        ({"dimensions": {**DIMENSIONS, "colour": "red"}}, "undeclared_dimension", None),
        ({"dimensions": {**DIMENSIONS, "streamed": 1.5}}, "invalid_field", "dimensions.streamed"),
        ({"dimensions": {**DIMENSIONS, "status": ["a"]}}, "invalid_field", "dimensions.status"),
        ({"dimensions": {**DIMENSIONS, "user_tier": 2**70}}, "invalid_dimension", None),
    ],
)
async def test_one_invalid_quantity_rejects_the_whole_event_naming_it(
    client: Client,
    llm: dict[str, str],
    pg_pool: asyncpg.Pool,
    change: dict[str, Any],
    code: str,
    field: str | None,
) -> None:
    body = values_event("bad", when(), **change)
    expected_field = field or (
        "dimensions.colour" if "colour" in body.get("dimensions", {}) else "dimensions.user_tier"
    )
    response = await client.post("/v1/events", json=body, headers=llm)
    assert response.status_code == 422, response.text
    problem = response.json()
    # Shape errors of a single event are caught while decoding the body.
    assert problem["code"] == ("validation_error" if code == "invalid_field" else code), problem
    assert problem["errors"][0]["field"] == expected_field, problem
    batch = await post(client, "/v1/events/batch", {"events": [body]}, llm)
    result = batch["results"][0]
    assert result["status"] == "invalid"
    assert (result["error"]["code"], result["error"]["field"]) == (code, expected_field)
    assert await pg_pool.fetchval("SELECT count(*) FROM events") == 0
    assert await pg_pool.fetchval("SELECT count(*) FROM rollups") == 0


async def test_an_archived_meter_in_values_rejects_the_event(
    client: Client, llm: dict[str, str], keys: Keys
) -> None:
    response = await client.patch(
        "/v1/meters/latency_ms", json={"status": "archived"}, headers=keys.admin
    )
    assert response.status_code == 200, response.text
    response = await client.post("/v1/events", json=values_event("a", when()), headers=llm)
    assert response.status_code == 422
    assert response.json()["code"] == "meter_archived"
    assert response.json()["errors"][0]["field"] == "values.latency_ms"


async def test_each_meter_keeps_only_the_dimensions_it_declares(
    client: Client, llm: dict[str, str], keys: Keys, pg_pool: asyncpg.Pool
) -> None:
    body = {"event_name": "gpu_seconds", "name": "GPU", "aggregation": "sum", "currency": "USD"}
    await post(client, "/v1/meters", {**body, "dimensions": ["region"]}, keys.admin)
    event = values_event(
        "mixed",
        when(),
        values={"gpu_seconds": "1.5", "input_tokens": 10},
        dimensions={"region": "eu", "provider": "openai", "streamed": False},
    )
    await post(client, "/v1/events", event, llm)
    rows = await rollups_of(pg_pool, "acme")
    assert {row[0]: row[7] for row in rows} == {
        "gpu_seconds": '{"region": "eu"}',
        "input_tokens": '{"provider": "openai", "streamed": "false"}',
    }
    # A dimension no meter of the event declares is refused, naming the meters.
    event = values_event("other", when(), values={"input_tokens": 1}, dimensions={"region": "eu"})
    response = await client.post("/v1/events", json=event, headers=llm)
    assert response.status_code == 422
    assert "'input_tokens'" in response.json()["detail"]

    # A rebuild from raw events gives the rollups ingestion gave, and the fold the cube.
    await post(client, "/v1/events", values_event("more", when(), user_id="u2"), llm)
    before = await rollups_of(pg_pool, "acme")
    wide_rows = await pg_pool.fetchval("SELECT count(*) FROM rollup_rows WHERE tenant_id = 'acme'")
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection, before=when(-60))
        folded = await connection.fetch(
            "SELECT * FROM rollup_cube ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11"
        )
        async with connection.transaction():
            start = when(120).replace(minute=0, second=0, microsecond=0)
            written = await rebuild_rollups(connection, "acme", start, start + timedelta(hours=3))
        assert written[1] == wide_rows
        await fold_rollups(connection, before=when(-60))
        refolded = await connection.fetch(
            "SELECT * FROM rollup_cube ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11"
        )
    assert await rollups_of(pg_pool, "acme") == before
    assert [tuple(r) for r in refolded] == [tuple(r) for r in folded]


async def test_the_event_list_shows_values_and_filters_by_any_of_its_meters(
    client: Client, llm: dict[str, str]
) -> None:
    ts = when()
    await post(client, "/v1/events", values_event("v", ts), llm)
    single = {
        "tenant_id": "acme",
        "idempotency_key": "s",
        "timestamp": ts.isoformat(),
        "event_name": "output_tokens",
        "value": 7,
    }
    await post(client, "/v1/events", single, llm)
    response = await client.get("/v1/events", params={"tenant_id": "acme"}, headers=llm)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["idempotency_key"] for item in items] == ["s", "v"]
    assert (items[0]["event_name"], items[0]["value"], items[0]["values"]) == (
        "output_tokens",
        "7",
        None,
    )
    assert items[1]["event_name"] is None and items[1]["value"] is None
    assert items[1]["values"] == {
        "input_tokens": "1834",
        "output_tokens": "212",
        "cache_read_tokens": "5000",
        "cache_write_5m_tokens": "0",
        "latency_ms": "812.5",
        "llm_requests": None,
    }
    assert items[1]["dimensions"] == {
        "provider": "openai",
        "status": "success",
        "streamed": "true",
        "user_tier": "2",
    }
    for meter, keys_seen in (("input_tokens", ["v"]), ("output_tokens", ["s", "v"])):
        response = await client.get(
            "/v1/events", params={"tenant_id": "acme", "event_name": meter}, headers=llm
        )
        assert [i["idempotency_key"] for i in response.json()["items"]] == keys_seen


async def test_single_events_count_alike_whether_a_batch_holds_values_events_or_not(
    client: Client, llm: dict[str, str], keys: Keys, pg_pool: asyncpg.Pool
) -> None:
    """Batches of single-value events only take a statement of their own; single events in a
    batch with a values event take the general one. Both must write the same rows."""
    await post(client, "/v1/tenants", {"id": "initech", "name": "initech"}, keys.admin)
    ts = when()

    def singles(tenant: str) -> list[dict[str, Any]]:
        return [
            {
                "tenant_id": tenant,
                "idempotency_key": f"{tenant}-{n}",
                "timestamp": (ts - timedelta(minutes=n % 3)).isoformat(),
                "event_name": ("input_tokens", "output_tokens", "llm_requests")[n % 3],
                **({} if n % 3 == 2 else {"value": n * 7}),
                "model": "gpt-4o",
                "user_id": f"u{n % 2}",
                "dimensions": {"status": "success", "streamed": n % 2 == 0},
            }
            for n in range(12)
        ]

    await post(client, "/v1/events/batch", {"events": singles("acme")}, llm)
    mixed = [*singles("globex"), values_event("v", ts, tenant_id="initech")]
    answer = await post(client, "/v1/events/batch", {"events": mixed}, llm)
    assert answer["accepted"] == 13
    assert await rollups_of(pg_pool, "acme") == await rollups_of(pg_pool, "globex")
    model_rows = (
        "SELECT m.event_name, r.bucket_start, r.model, r.dimensions::text, r.sum, r.count,"
        " r.last_value FROM model_rollups r JOIN meters m ON m.id = r.meter_id"
        " WHERE r.tenant_id = $1 ORDER BY 1, 2, 3, 4"
    )
    acme = [tuple(r) for r in await pg_pool.fetch(model_rows, "acme")]
    assert acme and acme == [tuple(r) for r in await pg_pool.fetch(model_rows, "globex")]
