"""Canceling events is the same as never sending them, whatever else happens.

For random events (single-value events and `values` events of several meters, including a
`last` meter and a meter that keeps a dimension the others drop), random prices and a random
subset canceled, with folds into the coarse levels at random points, one tenant that got every
event and canceled the subset answers GET /v1/usage (several group_bys and windows, in a zone
with a DST change in the month), GET /v1/costs and the invoice preview exactly as a tenant
that was only ever sent the rest.

Both tenants' events are ingested and canceled through an app whose late-arrival window is
ten years, so the months may be past ones with DST changes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.rollups.fold import fold_rollups
from tests.conftest import Keys, make_settings
from tests.invoices.conftest import create_meter, create_price, create_tenant, preview
from tests.support.in_loop import in_loop_client

Client = AsyncTestClient[Litestar]
ZONE = "America/New_York"
MONTHS = ["2026-03", "2026-11"]  # DST starts on 8 March, ends on 1 November
METERS = {"tokens_in": "sum", "tokens_out": "sum", "calls": "count", "seats": "last"}
MODELS = ["gpt-4o", "claude", None]
USERS = ["u1", "u2", None]
REGIONS = ["eu", "us", None]
DST_EVE = {
    "2026-03": datetime(2026, 3, 7, tzinfo=ZoneInfo(ZONE)),
    "2026-11": datetime(2026, 10, 31, tzinfo=ZoneInfo(ZONE)),
}
_tenants = itertools.count()


@pytest.fixture
async def catalog(client: Client, keys: Keys) -> dict[str, dict[str, str]]:
    await create_meter(client, keys, "tokens_in", "Input", "sum", dimensions=["region"])
    await create_meter(client, keys, "tokens_out", "Output", "sum")
    await create_meter(client, keys, "calls", "Calls", "count")
    await create_meter(client, keys, "seats", "Seats", "last")
    return {
        "billing": await keys.make("billing"),
        "read": await keys.make("read"),
        "ingest": await keys.make("ingest"),
    }


amounts = st.decimals(min_value="0.001", max_value="5", places=3).map(str)
event_specs = st.lists(
    st.fixed_dictionaries(
        {
            # A meter's event_name, or a `values` event of these meters.
            "meters": st.one_of(
                st.sampled_from(list(METERS)).map(lambda m: (m,)),
                st.lists(st.sampled_from(list(METERS)), min_size=2, max_size=4, unique=True)
                .map(sorted)
                .map(tuple)
                .map(lambda ms: ("values", *ms)),
            ),
            # A few instants (so events share 15-minute rows), seconds apart, or anywhere.
            "at": st.one_of(
                st.sampled_from([0.0, 0.25, 0.5]), st.floats(min_value=0, max_value=0.9999)
            ),
            "seconds": st.integers(min_value=0, max_value=300),
            "value": st.integers(min_value=0, max_value=10**6),
            "model": st.sampled_from(MODELS),
            "user_id": st.sampled_from(USERS),
            "region": st.sampled_from(REGIONS),
            "canceled": st.booleans(),
            # Copies: the same event (one more each time) sent again under other keys, so
            # rows hold several events; only the first copy may be canceled.
            "copies": st.integers(min_value=1, max_value=3),
        }
    ),
    min_size=6,
    max_size=24,
)


def month_bounds(period: str) -> tuple[datetime, datetime]:
    year, month = int(period[:4]), int(period[5:])
    tz = ZoneInfo(ZONE)
    start = datetime(year, month, 1, tzinfo=tz)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def event_body(
    index: int, spec: dict[str, Any], tenant_id: str, ts: datetime, prefix: str = "e"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tenant_id": tenant_id,
        "idempotency_key": f"{prefix}{index:03d}",
        "timestamp": ts.isoformat(),
        "model": spec["model"],
        "user_id": spec["user_id"],
    }
    meters = spec["meters"]
    quantities = {
        m: None if METERS[m] == "count" else str(spec["value"] + n)
        for n, m in enumerate(meters)
        if m != "values"
    }
    if meters[0] == "values":
        body["values"] = quantities
    else:
        body["event_name"] = meters[0]
        body["value"] = quantities[meters[0]]
    if spec["region"] is not None and "tokens_in" in meters:
        body["dimensions"] = {"region": spec["region"]}
    return {k: v for k, v in body.items() if v is not None}


def without_ids(value: Any) -> Any:
    """An answer with what names the tenant or a row (ids, numbers, price ids) left out."""
    if isinstance(value, dict):
        return {
            k: without_ids(v)
            for k, v in value.items()
            if k not in {"tenant_id", "id", "number", "price_id"}
        }
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


async def answers(
    client: Client, read: dict[str, str], billing: dict[str, str], tenant_id: str, period: str
) -> list[Any]:
    start, end = month_bounds(period)
    # Hours over the DST change: from the local midnight a day before it, for two days.
    edge = DST_EVE[period].astimezone(UTC)
    windows: list[dict[str, str]] = [
        {"from": start.isoformat(), "to": end.isoformat()},
        {"from": start.isoformat(), "to": end.isoformat(), "window_size": "day"},
        {
            "from": edge.isoformat(),
            "to": (edge + timedelta(days=2)).isoformat(),
            "window_size": "hour",
        },
    ]
    group_bys = [[], ["model"], ["user_id", "model"], ["region"]]
    found: list[Any] = []
    for meter, window, group_by in itertools.product(METERS, windows, group_bys):
        if group_by == ["region"] and meter != "tokens_in":
            continue
        params = [("tenant_id", tenant_id), ("meter", meter), ("timezone", ZONE)]
        params += [*window.items(), *(("group_by", key) for key in group_by)]
        response = await client.get("/v1/usage", params=params, headers=read)
        assert response.status_code == 200, response.text
        found.append(without_ids(response.json()))
    for group_by in ([], ["model"]):
        params = [("tenant_id", tenant_id), ("period", period), ("window_size", "day")]
        params += [("group_by", key) for key in group_by]
        response = await client.get("/v1/costs", params=params, headers=billing)
        assert response.status_code == 200, response.text
        found.append(without_ids(response.json()))
    found.append(without_ids(await preview(client, billing, tenant_id, period)))
    return found


async def fold(pg_pool: asyncpg.Pool) -> None:
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection)


# Bounded: each example runs about a hundred requests. No shrinking: it would rerun them for
# minutes; a failure prints its example and seed as found.
@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    period=st.sampled_from(MONTHS),
    specs=event_specs,
    prices=st.fixed_dictionaries(
        {
            "gpt": amounts,
            "out": amounts,
            "call": amounts,
            "free": st.integers(1, 3),
            "seat": amounts,
        }
    ),
    # Folds mostly happen: cancels of folded rows are the interesting ones.
    folds=st.lists(st.sampled_from([True, True, False]), min_size=4, max_size=4),
    later=st.sets(st.integers(0, 71), max_size=10),
)
async def test_canceling_equals_never_sending(
    client: Client,
    keys: Keys,
    catalog: dict[str, dict[str, str]],
    database_url: str,
    pg_pool: asyncpg.Pool,
    period: str,
    specs: list[dict[str, Any]],
    prices: dict[str, Any],
    folds: list[bool],
    later: set[int],
) -> None:
    n = next(_tenants)
    sent, clean = f"sent{n}", f"clean{n}"
    for tenant_id in (sent, clean):
        await create_tenant(client, keys, tenant_id, timezone=ZONE)
        tenant = {"tenant_id": tenant_id, "effective_from": "2026-01-01T00:00:00Z"}
        await create_price(
            client,
            keys,
            "tokens_in",
            unit_amount=prices["gpt"],
            per_units="1000000",
            match={"model": "gpt-4o"},
            **tenant,
        )
        await create_price(
            client, keys, "tokens_out", unit_amount=prices["out"], per_units="1000", **tenant
        )
        await create_price(
            client,
            keys,
            "calls",
            tiers=[
                {"up_to": prices["free"], "unit_amount": "0"},
                {"up_to": None, "unit_amount": prices["call"]},
            ],
            **tenant,
        )
        await create_price(client, keys, "seats", unit_amount=prices["seat"], **tenant)
    specs = [
        {**spec, "value": spec["value"] + copy, "canceled": spec["canceled"] and copy == 0}
        for spec in specs
        for copy in range(spec["copies"])
    ]
    start, end = month_bounds(period)
    times = [
        (start + (end - start) * spec["at"]).replace(microsecond=0)
        + timedelta(seconds=spec["seconds"])
        for spec in specs
    ]
    ingest = catalog["ingest"]
    wide = make_settings(database_url, late_arrival_days=3650, retention_days=3650)
    async with in_loop_client(create_app(wide)) as app:

        async def batch(events: list[dict[str, Any]]) -> list[str]:
            if not events:
                return []
            response = await app.post("/v1/events/batch", json={"events": events}, headers=ingest)
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            assert all(r["status"] == "accepted" for r in results), results
            return [r["id"] for r in results]

        half = len(specs) // 2
        everything = [
            event_body(i, s, sent, t) for i, (s, t) in enumerate(zip(specs, times, strict=True))
        ]
        ids = await batch(everything[:half])
        if folds[0]:
            await fold(pg_pool)
        ids += await batch(everything[half:])
        await batch(
            [
                event_body(i, s, clean, t)
                for i, (s, t) in enumerate(zip(specs, times, strict=True))
                if not s["canceled"]
            ]
        )
        if folds[1]:
            await fold(pg_pool)
        doomed = [event_id for event_id, spec in zip(ids, specs, strict=True) if spec["canceled"]]
        for position, event_id in enumerate(doomed):
            response = await app.post(
                f"/v1/events/{event_id}/cancel", params={"tenant_id": sent}, headers=ingest
            )
            assert response.status_code == 200, response.text
            if folds[2] and position % 2 == 0:  # often folded again before the next
                await fold(pg_pool)
        # Events after the cancels, into the same rows (the same times and attribution as
        # events sent before): a row's count going down and up again must stay exact.
        for tenant_id in (sent, clean):
            await batch(
                [
                    event_body(i, s, tenant_id, t, prefix="later")
                    for i, (s, t) in enumerate(zip(specs, times, strict=True))
                    if i in later
                ]
            )
    read, billing = catalog["read"], catalog["billing"]
    assert await answers(client, read, billing, sent, period) == await answers(
        client, read, billing, clean, period
    )
    if folds[3]:
        await fold(pg_pool)
        assert await answers(client, read, billing, sent, period) == await answers(
            client, read, billing, clean, period
        )
