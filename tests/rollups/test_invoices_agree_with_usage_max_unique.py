"""Invoices and usage queries agree for `max` and `unique_count` meters too: a price's quantity
is the aggregate over every event it matches in the period (the largest value; the number of
distinct users), which GET /v1/usage gives over the same period filtered by the price's match,
and which a naive computation over the raw events gives. Random events of a tenant-month in a
zone with DST changes or in Asia/Kathmandu (+05:45), with a price change in the month."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.events.repository import EventRow, store_events
from tests.conftest import Keys
from tests.invoices.conftest import create_meter, create_price, create_tenant, preview
from tests.rollups.test_invoices_agree_with_usage import (
    MONTHS,
    TENANTS,
    Client,
    event_time,
    period_bounds,
)

CHANGE = datetime(2026, 10, 16, 0, 0, tzinfo=UTC)  # the gpt-4o price of both meters changes
MODELS = ["gpt-4o", "claude", "llama"]
USERS = ["u1", "u2", "u3", "u4"]


@pytest.fixture
async def catalog(client: Client, keys: Keys) -> dict[str, dict[str, str]]:
    for tenant_id, zone in TENANTS.items():
        await create_tenant(client, keys, tenant_id, timezone=zone)
    await create_meter(client, keys, "peak", "Peak", "max")
    await create_meter(client, keys, "mau", "MAU", "unique_count", unique_key="user_id")
    for meter in ("peak", "mau"):
        gpt = {"model": "gpt-4o"}
        change = CHANGE.isoformat()
        tiers = [{"up_to": 2, "unit_amount": "3"}, {"up_to": None, "unit_amount": "1"}]
        await create_price(client, keys, meter, tiers=tiers, match=gpt, effective_to=change)
        await create_price(client, keys, meter, tiers=tiers, match=gpt, effective_from=change)
        await create_price(client, keys, meter, unit_amount="0.5", match={"model": "claude"})
    return {"billing": await keys.make("billing"), "read": await keys.make("read")}


def naive(
    events: list[dict[str, Any]], meter: str, start: datetime, end: datetime, model: str | None
) -> Decimal | None:
    taken = [
        e for e in events if e["meter"] == meter and start <= e["ts"] < end and e["model"] == model
    ]
    if not taken:
        return None
    if meter == "peak":
        return max(e["value"] for e in taken)  # type: ignore[no-any-return]
    return Decimal(len({e["user_id"] for e in taken} - {None}))


async def usage_value(
    client: Client,
    key: dict[str, str],
    tenant_id: str,
    meter: str,
    start: str,
    end: str,
    model: str,
) -> Decimal | None:
    params = [
        ("tenant_id", tenant_id),
        ("meter", meter),
        ("from", start),
        ("to", end),
        ("filter", f"model:{model}"),
    ]
    response = await client.get("/v1/usage", params=params, headers=key)
    assert response.status_code == 200, response.text
    rows = response.json()["rows"]
    assert len(rows) <= 1
    return Decimal(rows[0]["value"]) if rows else None


event_specs = st.lists(
    st.fixed_dictionaries(
        {
            "meter": st.sampled_from(["peak", "mau"]),
            "at": st.one_of(
                st.floats(min_value=-0.05, max_value=1.05),
                st.sampled_from(["start", "end", "change"]),
            ),
            "nudge": st.sampled_from([0, 0, -1, 1, -1000, 1000]),
            "value": st.decimals(min_value=0, max_value=1000, places=2),
            "model": st.one_of(st.none(), st.sampled_from(MODELS)),
            "user_id": st.one_of(st.none(), st.sampled_from(USERS)),
        }
    ),
    max_size=50,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tenant_id=st.sampled_from(list(TENANTS)),
    period=st.sampled_from(MONTHS),
    specs=event_specs,
)
async def test_max_and_unique_count_lines_equal_usage_and_raw_events(
    client: Client,
    catalog: dict[str, dict[str, str]],
    pg_pool: asyncpg.Pool,
    tenant_id: str,
    period: str,
    specs: list[dict[str, Any]],
) -> None:
    await pg_pool.execute("TRUNCATE events, rollup_rows, model_rollup_rows, rollup_cube")
    meter_ids = {r["event_name"]: r["id"] for r in await pg_pool.fetch("SELECT * FROM meters")}
    start, end = period_bounds(period, TENANTS[tenant_id])
    events, rows = [], []
    for index, spec in enumerate(specs):
        ts = event_time({**spec, "at": spec["at"]}, start, end)
        if spec["at"] == "change":
            ts = CHANGE + timedelta(microseconds=spec["nudge"])
        value = spec["value"] if spec["meter"] == "peak" else None
        key = f"e{index}"
        events.append({**spec, "ts": ts, "value": value})
        rows.append(
            EventRow(
                tenant_id=tenant_id,
                meter_id=meter_ids[spec["meter"]],
                idempotency_key=key,
                payload_hash=hashlib.sha256(key.encode()).digest(),
                value=value,
                ts=ts,
                org_id=None,
                project_id=None,
                api_key_id=None,
                user_id=spec["user_id"],
                model=spec["model"],
                dimensions_json=json.dumps({}),
                metadata_json=None,
                has_max=spec["meter"] == "peak",
            )
        )
    async with pg_pool.acquire() as connection, connection.transaction():
        await store_events(connection, rows)

    billed: set[tuple[str, str]] = set()
    for invoice in await preview(client, catalog["billing"], tenant_id, period):
        for line in invoice["lines"]:
            model = line["match"].get("model")
            line_from = datetime.fromisoformat(line["period_start"])
            line_to = datetime.fromisoformat(line["period_end"])
            quantity = Decimal(line["quantity"])
            if line["unpriced"]:
                # Usage no price takes (llama, or no model): its own line per model.
                assert model in (None, "llama"), line
            else:
                from_usage = await usage_value(
                    client,
                    catalog["read"],
                    tenant_id,
                    line["meter"],
                    line["period_start"],
                    line["period_end"],
                    model,
                )
                assert quantity == from_usage, (line, from_usage)
            assert quantity == naive(events, line["meter"], line_from, line_to, model), line
            billed.add((line["meter"], str(model)))
    # Nothing left out: every model with a nonzero quantity in the month has its line.
    for meter in ("peak", "mau"):
        for model in [*MODELS, None]:
            whole = naive(events, meter, start, end, model)
            if whole:
                assert (meter, str(model)) in billed, (meter, model)
