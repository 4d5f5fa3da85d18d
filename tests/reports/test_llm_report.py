"""GET /v1/reports/llm against a naive computation over the stored events: for random LLM
calls (models, users, statuses, token counts, calls with and without latency, time to first
token and cache tokens), any grouping (status included), daily windows or none, every row's
requests by status, tokens, cache hit rate, averages and cost equal what the events say."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering_client.results import LlmReport as ClientLlmReport
from service.events.repository import EventRow, store_events
from tests.conftest import Keys
from tests.costs.conftest import Client
from tests.invoices.conftest import create_price, create_tenant

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
MONTH = {"tenant_id": "acme", "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
# Per 1,000,000 tokens, model m1 only (m2's usage is unpriced and costs nothing).
PRICES = {"input_tokens": Decimal("2.00"), "output_tokens": Decimal("8.00"),
          "cache_read_tokens": Decimal("0.50")}  # fmt: skip
TOKENS = ("input_tokens", "output_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
          "cache_read_tokens")  # fmt: skip
GROUPINGS = [[], ["model"], ["user_id"], ["model", "status"], ["status"]]


async def report(client: Client, key: dict[str, str], expect: int = 200, **params: Any) -> Any:
    query = [
        (k, str(v))
        for k, values in params.items()
        for v in (values if isinstance(values, list) else [values])
    ]
    response = await client.get("/v1/reports/llm", params=query, headers=key)
    assert response.status_code == expect, response.text
    return response.json()


@pytest.fixture
async def llm(client: Client, keys: Keys) -> dict[str, str]:
    await create_tenant(client, keys, "acme", timezone="UTC", currency="USD")
    response = await client.post("/v1/meters/presets/llm", json={}, headers=keys.admin)
    assert response.status_code == 200, response.text
    for meter, amount in PRICES.items():
        await create_price(
            client, keys, meter, unit_amount=str(amount), per_units="1000000",
            match={"model": "m1"},
        )  # fmt: skip
    return await keys.make("read")


calls = st.lists(
    st.fixed_dictionaries(
        {
            "at": st.floats(0, 0.9999),
            "model": st.sampled_from(["m1", "m2", None]),
            "user_id": st.sampled_from(["u1", "u2"]),
            "status": st.sampled_from(["success", "success", "error", "canceled", None]),
            "tokens": st.fixed_dictionaries(
                {name: st.one_of(st.just(0), st.integers(0, 50_000)) for name in TOKENS}
            ),
            "latency_ms": st.one_of(st.none(), st.integers(1, 30_000)),
            "ttft_ms": st.one_of(st.none(), st.integers(1, 5_000)),
        }
    ),
    max_size=25,
)


def rounded(value: Decimal, places: str) -> str:
    return format(value.quantize(Decimal(places), rounding=ROUND_HALF_UP), "f")


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=calls, group_by=st.sampled_from(GROUPINGS), daily=st.booleans())
async def test_llm_report_equals_a_naive_computation(
    client: Client,
    llm: dict[str, str],
    pg_pool: asyncpg.Pool,
    specs: list[dict[str, Any]],
    group_by: list[str],
    daily: bool,
) -> None:
    await pg_pool.execute("TRUNCATE events, rollup_rows, model_rollup_rows, rollup_cube")
    meters = {r["event_name"]: r["id"] for r in await pg_pool.fetch("SELECT * FROM meters")}
    rows: list[EventRow] = []
    for index, spec in enumerate(specs):
        ts = START + timedelta(seconds=int((END - START).total_seconds() * spec["at"]))
        dimensions = {} if spec["status"] is None else {"status": spec["status"]}
        values: dict[str, Decimal | None] = {"llm_requests": None}
        values.update({name: Decimal(n) for name, n in spec["tokens"].items()})
        for name in ("latency_ms", "ttft_ms"):
            if spec[name] is not None:
                values[name] = Decimal(spec[name])
        for meter, value in values.items():
            key = f"call{index}-{meter}"
            rows.append(
                EventRow(
                    tenant_id="acme", meter_id=meters[meter], idempotency_key=key,
                    payload_hash=hashlib.sha256(key.encode()).digest(), value=value, ts=ts,
                    org_id=None, project_id=None, api_key_id=None, user_id=spec["user_id"],
                    model=spec["model"], dimensions_json=json.dumps(dimensions),
                    metadata_json=None,
                )
            )  # fmt: skip
    if rows:
        async with pg_pool.acquire() as connection, connection.transaction():
            await store_events(connection, rows)

    expected: dict[Any, dict[str, Any]] = {}
    for spec in specs:
        ts = START + timedelta(seconds=int((END - START).total_seconds() * spec["at"]))
        window = datetime(ts.year, ts.month, ts.day, tzinfo=UTC) if daily else START
        key = (window, tuple(spec[k] for k in group_by))
        row = expected.setdefault(key, defaultdict(Decimal))
        row["requests"] += 1
        if spec["status"] in ("success", "error", "canceled"):
            row[spec["status"]] += 1
        for name, n in spec["tokens"].items():
            row[name] += n
            if spec["model"] == "m1" and name in PRICES:
                row["cost"] += n * PRICES[name] / 1_000_000
        for name in ("latency_ms", "ttft_ms"):
            if spec[name] is not None:
                row[name] += spec[name]
                row[name + "_count"] += 1

    params: dict[str, Any] = {**MONTH, "group_by": group_by}
    if daily:
        params["window_size"] = "day"
    answer = await report(client, llm, **params)
    assert answer["currency"] == "USD"
    got = {
        (datetime.fromisoformat(r["window_start"]), tuple(r["group"][k] for k in group_by)): r
        for r in answer["rows"]
    }
    assert set(got) == set(expected)
    for key, row in expected.items():
        write = row["cache_write_5m_tokens"] + row["cache_write_1h_tokens"]
        read = row["cache_read_tokens"]
        assert got[key] | {"window_start": None, "window_end": None, "group": None} == {
            "window_start": None,
            "window_end": None,
            "group": None,
            "requests": int(row["requests"]),
            "success": int(row["success"]),
            "errors": int(row["error"]),
            "canceled": int(row["canceled"]),
            "input_tokens": str(row["input_tokens"]),
            "output_tokens": str(row["output_tokens"]),
            "cache_write_tokens": str(write),
            "cache_read_tokens": str(read),
            "cache_hit_rate": None if read + write == 0 else rounded(read / (read + write), "1e-6"),
            "avg_latency_ms": (
                rounded(row["latency_ms"] / row["latency_ms_count"], "1e-3")
                if row["latency_ms_count"]
                else None
            ),
            "avg_ttft_ms": (
                rounded(row["ttft_ms"] / row["ttft_ms_count"], "1e-3")
                if row["ttft_ms_count"]
                else None
            ),
            "cost": rounded(row["cost"], "1e-12"),
        }, key


async def test_cache_hit_rate_is_null_without_cache_tokens(
    client: Client, llm: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    meters = {r["event_name"]: r["id"] for r in await pg_pool.fetch("SELECT * FROM meters")}
    rows = [
        EventRow(
            tenant_id="acme", meter_id=meters[name], idempotency_key=name,
            payload_hash=hashlib.sha256(name.encode()).digest(), value=value,
            ts=datetime(2026, 11, 2, tzinfo=UTC), org_id=None, project_id=None,
            api_key_id=None, user_id=None, model="m1",
            dimensions_json=json.dumps({"status": "success"}), metadata_json=None,
        )
        for name, value in (("llm_requests", None), ("input_tokens", Decimal(1_000_000)))
    ]  # fmt: skip
    async with pg_pool.acquire() as connection, connection.transaction():
        await store_events(connection, rows)
    answer = await report(client, llm, **MONTH)
    # metering_client's typed answer reads it too.
    typed = msgspec.convert(answer, type=ClientLlmReport, strict=False)
    assert typed.rows[0].cost == Decimal(2) and typed.rows[0].cache_hit_rate is None
    [row] = answer["rows"]
    assert row["requests"] == row["success"] == 1
    assert row["cache_hit_rate"] is None
    assert row["avg_latency_ms"] is None
    assert row["input_tokens"] == "1000000"
    assert row["cost"] == "2.000000000000"


async def test_without_the_preset_it_is_422_naming_the_missing_meters(
    client: Client, keys: Keys
) -> None:
    await create_tenant(client, keys, "acme")
    problem = await report(client, await keys.make("read"), 422, **MONTH)
    assert problem["code"] == "llm_preset_missing"
    assert "llm_requests" in problem["detail"]
    assert "POST /v1/meters/presets/llm" in problem["detail"]
    assert {e["field"] for e in problem["errors"]} >= {"llm_requests", "ttft_ms"}


async def test_bad_parameters_are_422_naming_them(client: Client, llm: dict[str, str]) -> None:
    for params, field in (
        ({"groupby": "model"}, "groupby"),
        ({"meter": "input_tokens"}, "meter"),
        ({"group_by": "colour"}, "group_by"),
        ({"window_size": "week"}, "window_size"),
        ({"to": "soon"}, "to"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"period": "2026-11"}, "period"),
    ):
        problem = await report(client, llm, 422, **{**MONTH, **params})
        assert field in [e["field"] for e in problem["errors"]], problem


async def test_period_stands_for_from_and_to(client: Client, llm: dict[str, str]) -> None:
    answer = await report(client, llm, tenant_id="acme", period="2026-11")
    assert (answer["from"], answer["to"]) == ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
