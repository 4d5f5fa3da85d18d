"""Invoices and usage queries can never disagree on a quantity: both read the one rollup store.

For random events (a meter with dimension-matched prices and a price change, a count meter
priced by project, an unpriced meter, a `last` meter; random attribution) and a random
tenant-month in a zone with DST changes or in Asia/Kathmandu (+05:45), every line of the
invoice preview has the quantity that GET /v1/usage gives for the same meter, over the line's
period, summed over the groups whose usage that line's price (or unpriced match) takes; and
both equal a naive computation over the raw events. The lines of a meter add up to its whole
usage of the month.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.events.repository import EventRow, store_events
from tests.conftest import Keys
from tests.invoices.conftest import create_meter, create_price, create_tenant, preview

Client = AsyncTestClient[Litestar]
TENANTS = {
    "berlin": "Europe/Berlin",
    "newyork": "America/New_York",
    "kathmandu": "Asia/Kathmandu",
    "lordhowe": "Australia/Lord_Howe",
}
# Months with a DST change in most of those zones.
MONTHS = ["2026-03", "2026-04", "2026-10", "2026-11"]
SINCE = "2026-01-01T00:00:00Z"
GPT_CHANGE = datetime(2026, 10, 16, 0, 0, tzinfo=UTC)  # gpt-4o input gets cheaper
# The attribute keys each meter's prices match on: usage is grouped by them.
PRICE_KEYS = {
    "input_tokens": ("model", "region"),
    "api_calls": ("project_id",),
    "output_tokens": (),
    "seats": (),
}
AGGREGATION = {"input_tokens": "sum", "api_calls": "count", "output_tokens": "sum", "seats": "last"}
POOLS = {
    "model": ["gpt-4o", "claude", "llama"],
    "region": ["eu", "us"],
    "project_id": ["p1", "p2"],
    "user_id": ["u1", "u2"],
}
Match = tuple[tuple[str, str], ...]


def resolve(meter: str, attributes: dict[str, str | None]) -> tuple[Match, bool]:
    """By hand: the match of the price that takes usage with these attribute values (the most
    specific applicable one), and whether it is unpriced (then the match is its non-null
    values)."""
    model, region = attributes.get("model"), attributes.get("region")
    if meter == "input_tokens":
        if model == "claude" and region == "eu":
            return (("model", "claude"), ("region", "eu")), False
        if model in ("gpt-4o", "claude"):
            return (("model", str(model)),), False
        present = {k: v for k, v in attributes.items() if v is not None}
        return tuple(sorted(present.items())), True
    if meter == "api_calls":
        if attributes.get("project_id") == "p1":
            return (("project_id", "p1"),), False
        return (), False
    if meter == "seats":
        return (), False
    return (), True  # output_tokens has no price


@pytest.fixture
async def catalog(client: Client, keys: Keys) -> dict[str, dict[str, str]]:
    """Tenants, meters and prices; returns the billing and read keys."""
    for tenant_id, zone in TENANTS.items():
        await create_tenant(client, keys, tenant_id, timezone=zone)
    await create_meter(client, keys, "input_tokens", "Input", "sum", dimensions=["region"])
    await create_meter(client, keys, "api_calls", "Calls", "count")
    await create_meter(client, keys, "output_tokens", "Output", "sum")
    await create_meter(client, keys, "seats", "Seats", "last")
    per_m = {"per_units": "1000000"}
    change = GPT_CHANGE.isoformat()
    gpt = {"model": "gpt-4o"}
    await create_price(
        client, keys, "input_tokens", unit_amount="2.50", match=gpt, effective_to=change, **per_m
    )
    await create_price(
        client, keys, "input_tokens", unit_amount="2.00", match=gpt, effective_from=change, **per_m
    )
    await create_price(client, keys, "input_tokens", unit_amount="3", match={"model": "claude"})
    await create_price(
        client, keys, "input_tokens", unit_amount="3.30", match={"model": "claude", "region": "eu"}
    )
    await create_price(client, keys, "api_calls", unit_amount="0.01")
    await create_price(client, keys, "api_calls", unit_amount="0.005", match={"project_id": "p1"})
    await create_price(client, keys, "seats", unit_amount="8")
    return {"billing": await keys.make("billing"), "read": await keys.make("read")}


def period_bounds(period: str, zone: str) -> tuple[datetime, datetime]:
    year, month = int(period[:4]), int(period[5:])
    following = (year + 1, 1) if month == 12 else (year, month + 1)
    tz = ZoneInfo(zone)
    return (
        datetime(year, month, 1, tzinfo=tz).astimezone(UTC),
        datetime(*following, 1, tzinfo=tz).astimezone(UTC),
    )


event_specs = st.lists(
    st.fixed_dictionaries(
        {
            "meter": st.sampled_from(list(AGGREGATION)),
            # Where in the month: a fraction of it, or an edge (start, end, the price change).
            "at": st.one_of(
                st.floats(min_value=-0.05, max_value=1.05),
                st.sampled_from(["start", "end", "change"]),
            ),
            "nudge": st.sampled_from([0, 0, -1, 1, -1000, 1000]),  # microseconds
            "value": st.decimals(min_value=0, max_value=10**6, places=3),
            "attribution": st.fixed_dictionaries(
                {
                    k: st.one_of(st.none(), st.sampled_from(POOLS[k]))
                    for k in ("model", "project_id", "user_id")
                }
            ),
            "region": st.one_of(st.none(), st.sampled_from(POOLS["region"])),
        }
    ),
    max_size=60,
)


def event_time(spec: dict[str, Any], start: datetime, end: datetime) -> datetime:
    at = spec["at"]
    if at == "start":
        base = start
    elif at == "end":
        base = end
    elif at == "change":
        base = GPT_CHANGE
    else:
        base = start + (end - start) * at
    return base + timedelta(microseconds=spec["nudge"])


def naive(
    events: list[dict[str, Any]], meter: str, start: datetime, end: datetime
) -> dict[tuple[Match, bool], Decimal]:
    """The meter's quantity in [start, end) per resolved price match, over the raw events."""
    taken = [e for e in events if e["meter"] == meter and start <= e["ts"] < end]
    if AGGREGATION[meter] == "last":
        if not taken:
            return {}
        latest = max(taken, key=lambda e: (e["ts"], e["id"]))
        return {resolve(meter, {}): latest["value"]}
    totals: dict[tuple[Match, bool], Decimal] = defaultdict(Decimal)
    for event in taken:
        attributes = {k: event["attributes"].get(k) for k in PRICE_KEYS[meter]}
        quantity = Decimal(1) if AGGREGATION[meter] == "count" else event["value"]
        totals[resolve(meter, attributes)] += quantity
    return dict(totals)


async def usage_by_match(
    client: Client, key: dict[str, str], tenant_id: str, meter: str, start: str, end: str
) -> dict[tuple[Match, bool], Decimal]:
    """GET /v1/usage for the meter over [start, end), grouped by its price keys, each group's
    value added to the match that takes it."""
    params = [("tenant_id", tenant_id), ("meter", meter), ("from", start), ("to", end)]
    params += [("group_by", k) for k in PRICE_KEYS[meter]]
    response = await client.get("/v1/usage", params=params, headers=key)
    assert response.status_code == 200, response.text
    totals: dict[tuple[Match, bool], Decimal] = defaultdict(Decimal)
    for row in response.json()["rows"]:
        totals[resolve(meter, row["group"])] += Decimal(row["value"])
    return dict(totals)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tenant_id=st.sampled_from(list(TENANTS)),
    period=st.sampled_from(MONTHS),
    specs=event_specs,
)
async def test_invoice_lines_equal_usage_and_raw_events(
    client: Client,
    catalog: dict[str, dict[str, str]],
    pg_pool: asyncpg.Pool,
    tenant_id: str,
    period: str,
    specs: list[dict[str, Any]],
) -> None:
    await pg_pool.execute("TRUNCATE events, rollup_rows, model_rollup_rows")
    meter_ids = {r["event_name"]: r["id"] for r in await pg_pool.fetch("SELECT * FROM meters")}
    start, end = period_bounds(period, TENANTS[tenant_id])
    rows, events = [], []
    for index, spec in enumerate(specs):
        meter = spec["meter"]
        attributes = dict(spec["attribution"])
        dimensions = {}
        if meter == "input_tokens" and spec["region"] is not None:
            dimensions["region"] = spec["region"]
        value = None if AGGREGATION[meter] == "count" else spec["value"]
        key = f"e{index}"
        ts = event_time(spec, start, end)
        events.append(
            {
                "key": key,
                "meter": meter,
                "ts": ts,
                "value": value,
                "attributes": {**attributes, **dimensions},
            }
        )
        rows.append(
            EventRow(
                tenant_id=tenant_id,
                meter_id=meter_ids[meter],
                idempotency_key=key,
                payload_hash=hashlib.sha256(key.encode()).digest(),
                value=value,
                ts=ts,
                org_id=None,
                project_id=attributes["project_id"],
                api_key_id=None,
                user_id=attributes["user_id"],
                model=attributes["model"],
                dimensions_json=json.dumps(dimensions),
                metadata_json=None,
            )
        )
    async with pg_pool.acquire() as connection, connection.transaction():
        stored = await store_events(connection, rows)
    for event in events:
        event["id"] = stored[(tenant_id, event["key"])].id

    lines: dict[tuple[str, str, str, Match, bool], Decimal] = defaultdict(Decimal)
    for invoice in await preview(client, catalog["billing"], tenant_id, period):
        for line in invoice["lines"]:
            # Tiers of one price are lines of their own: their quantities add up.
            match = tuple(sorted(line["match"].items()))
            line_key = (line["meter"], line["period_start"], line["period_end"], match)
            lines[(*line_key, line["unpriced"])] += Decimal(line["quantity"])

    billed: dict[str, dict[tuple[Match, bool], Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for (meter, line_start, line_end, match, unpriced), quantity in lines.items():
        line_from = datetime.fromisoformat(line_start)
        line_to = datetime.fromisoformat(line_end)
        assert start <= line_from < line_to <= end
        if AGGREGATION[meter] == "last":
            assert (line_from, line_to) == (start, end)
        from_usage = await usage_by_match(
            client, catalog["read"], tenant_id, meter, line_start, line_end
        )
        from_events = naive(events, meter, line_from, line_to)
        assert quantity == from_usage.get((match, unpriced)), (meter, match, from_usage)
        assert quantity == from_events.get((match, unpriced)), (meter, match, from_events)
        billed[meter][(match, unpriced)] += quantity

    # Nothing is left out: per meter and match, the lines bill the whole month's usage (a
    # `last` meter bills its latest value), zero quantities excepted.
    for meter in AGGREGATION:
        whole = {k: v for k, v in naive(events, meter, start, end).items() if v != 0}
        month = await usage_by_match(
            client, catalog["read"], tenant_id, meter, start.isoformat(), end.isoformat()
        )
        assert {k: v for k, v in month.items() if v != 0} == whole, meter
        assert {k: v for k, v in billed[meter].items() if v != 0} == whole, meter
