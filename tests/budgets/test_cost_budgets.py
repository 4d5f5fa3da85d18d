"""Cost budgets: `used` is the cost GET /v1/costs computes for the budget's scope and period
(prices resolved as on the invoice: a tenant override, matches, an effective-date change,
graduated tiers filled by the tenant's whole month, free units, a relative price), the check
sees every event acknowledged before it, and a threshold fires once however many batches
race."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys
from tests.invoices.conftest import create_meter, create_price, create_tenant

Client = AsyncTestClient[Litestar]

ZONE = "Europe/Berlin"
SINCE = "2026-01-01T00:00:00Z"
QUARTER = timedelta(minutes=15)
SCOPES: list[dict[str, str]] = [
    {},
    {"api_key_id": "k1"},
    {"user_id": "u1"},
    {"model": "m2"},
    {"api_key_id": "k2", "model": "m1"},
]


def period_start(period: str, zone: str = ZONE) -> datetime:
    local = datetime.now(ZoneInfo(zone))
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    return start.astimezone(UTC)


async def meters(client: Client, keys: Keys) -> None:
    await create_tenant(client, keys, "acme", timezone=ZONE)
    await create_tenant(client, keys, "other", timezone="UTC")
    await create_meter(client, keys, "tokens", "Tokens", "sum")
    await create_meter(client, keys, "cached", "Cached", "sum")
    await create_meter(client, keys, "calls", "Calls", "count")
    await create_meter(client, keys, "euro_tokens", "Euro tokens", "sum", currency="EUR")
    await create_meter(client, keys, "latency", "Latency", "sum", billable=False, currency=None)


async def post_budget(
    client: Client, keys: Keys, period: str, cost: str, scope: dict[str, str], **fields: Any
) -> str:
    body = {
        "tenant_id": "acme",
        "name": f"{period} {scope}",
        "period": period,
        "limit": {"cost": cost},
        "scope": scope,
        **fields,
    }
    answer = await client.post("/v1/budgets", json=body, headers=keys.admin)
    assert answer.status_code == 201, answer.text
    assert answer.json()["limit"] == {"cost": cost, "currency": "USD"}
    return str(answer.json()["id"])


async def ingest(client: Client, headers: dict[str, str], events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 500):
        answer = await client.post(
            "/v1/events/batch", json={"events": events[start : start + 500]}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["rejected"] == 0, answer.text


async def standings(client: Client, headers: dict[str, str], **query: str) -> dict[str, Any]:
    answer = await client.get(
        "/v1/budgets/check", params={"tenant_id": "acme", **query}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    return {b["id"]: b for b in answer.json()["budgets"]}


async def costs_total(
    client: Client, headers: dict[str, str], period: str, scope: dict[str, str]
) -> str:
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("tenant_id", "acme"),
        ("period", "today" if period == "day" else "this_month"),
    ]
    params += [("filter", f"{key}:{value}") for key, value in scope.items()]
    answer = await client.get("/v1/costs", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["total"])


# -- used is the cost of GET /v1/costs ------------------------------------------------------

amounts = st.decimals(min_value=0, max_value=40, places=2)
catalogs = st.fixed_dictionaries(
    {
        "a1": amounts,  # tokens of m1, per 1000 (a list price)
        "a1b": amounts,  # the same from `change` on, when there is a change
        "override": st.one_of(st.none(), amounts),  # acme's own price of tokens for m1
        "t2": st.integers(1, 5_000),  # tokens of m2: graduated, first tier up to t2
        "b1": amounts,
        "b2": amounts,
        "factor": st.decimals(min_value=Decimal("0.1"), max_value=2, places=1),  # cached m1
        "free": st.integers(0, 5),  # calls: free units, then graduated
        "tc": st.integers(1, 10),
        "c1": amounts,
        "c2": amounts,
        "change": st.one_of(st.none(), st.floats(0.05, 0.95)),  # where in today a1 ends
    }
)
event_specs = st.lists(
    st.fixed_dictionaries(
        {
            "meter": st.sampled_from(["tokens", "tokens", "cached", "calls", "euro_tokens"]),
            "at": st.floats(0, 0.999),  # of today so far; below 0: yesterday
            "yesterday": st.booleans(),
            "value": st.decimals(min_value=0, max_value=3000, places=1),
            "model": st.sampled_from(["m1", "m2", "m3", None]),
            "user_id": st.sampled_from(["u1", "u2", None]),
            "api_key_id": st.sampled_from(["k1", "k2", None]),
        }
    ),
    min_size=1,
    max_size=40,
)


async def create_prices(
    client: Client, keys: Keys, c: dict[str, Any], change: datetime | None
) -> None:
    m1, m2 = {"model": "m1"}, {"model": "m2"}
    thousand = {"per_units": "1000"}
    if change is None:
        await create_price(client, keys, "tokens", unit_amount=str(c["a1"]), match=m1, **thousand)
    else:
        await create_price(
            client,
            keys,
            "tokens",
            unit_amount=str(c["a1"]),
            match=m1,
            effective_to=change.isoformat(),
            **thousand,
        )
        await create_price(
            client,
            keys,
            "tokens",
            unit_amount=str(c["a1b"]),
            match=m1,
            effective_from=change.isoformat(),
            **thousand,
        )
    if c["override"] is not None:
        await create_price(
            client,
            keys,
            "tokens",
            unit_amount=str(c["override"]),
            match=m1,
            tenant_id="acme",
            **thousand,
        )
    tiers = [
        {"up_to": str(c["t2"]), "unit_amount": str(c["b1"])},
        {"up_to": None, "unit_amount": str(c["b2"])},
    ]
    await create_price(client, keys, "tokens", match=m2, tiers=tiers, per_units="1000")
    await create_price(
        client,
        keys,
        "cached",
        match=m1,
        relative_to={"meter": "tokens", "factor": str(c["factor"])},
    )
    tiers = [
        {"up_to": str(c["tc"]), "unit_amount": str(c["c1"])},
        {"up_to": None, "unit_amount": str(c["c2"])},
    ]
    await create_price(client, keys, "calls", tiers=tiers, free_units=str(c["free"]))
    await create_price(client, keys, "euro_tokens", unit_amount="1")


@pytest.fixture
async def priced(client: Client, keys: Keys) -> dict[str, dict[str, str]]:
    await meters(client, keys)
    return {
        "ingest": await keys.make("ingest"),
        "read": await keys.make("read"),
        "billing": await keys.make("billing"),
    }


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(catalog=catalogs, specs=event_specs)
async def test_used_is_the_cost_of_the_scope_and_period(
    client: Client,
    keys: Keys,
    priced: dict[str, dict[str, str]],
    pg_pool: asyncpg.Pool,
    catalog: dict[str, Any],
    specs: list[dict[str, Any]],
) -> None:
    await pg_pool.execute(
        "TRUNCATE events, rollup_rows, model_rollup_rows, rollup_cube, prices, budgets CASCADE"
    )
    now = datetime.now(UTC)
    today = period_start("day")
    elapsed = now - today
    change = None
    if catalog["change"] is not None and elapsed > 2 * QUARTER:
        change = today + QUARTER * max(1, int(elapsed / QUARTER * catalog["change"]))
    await create_prices(client, keys, catalog, change)
    budgets = {
        await post_budget(client, keys, period, "100", scope): (period, scope)
        for period in ("day", "month")
        for scope in SCOPES
    }
    events = []
    for n, spec in enumerate(specs):
        if spec["yesterday"] and spec["at"] < 0.3:
            ts = today - timedelta(hours=5) * spec["at"] - timedelta(seconds=1)
        else:
            ts = today + elapsed * spec["at"]
        event = {
            "tenant_id": "acme",
            "event_name": spec["meter"],
            "idempotency_key": f"e{n}",
            "timestamp": ts.isoformat(),
        }
        if spec["meter"] != "calls":
            event["value"] = str(spec["value"])
        for key in ("model", "user_id", "api_key_id"):
            if spec[key] is not None:
                event[key] = spec[key]
        events.append(event)
    # Another tenant's usage of the same meters costs acme nothing.
    events.append({**events[0], "tenant_id": "other", "idempotency_key": "x"})
    half = len(events) // 2
    await ingest(client, priced["ingest"], events[:half])
    await ingest(client, priced["ingest"], events[half:])

    shown = await standings(
        client, priced["read"], api_key_id="k1", user_id="u1", model="m2"
    ) | await standings(client, priced["read"], api_key_id="k2", model="m1")
    assert set(shown) == set(budgets)
    for budget_id, (period, scope) in budgets.items():
        expected = await costs_total(client, priced["billing"], period, scope)
        standing = shown[budget_id]
        assert standing["used"] == expected, (period, scope, change)
        assert standing["limit"] == {"cost": "100", "currency": "USD"}
        assert Decimal(standing["remaining"]) == max(Decimal(100) - Decimal(expected), 0)
        assert standing["exhausted"] is (Decimal(expected) >= 100)


# -- golden ---------------------------------------------------------------------------------


async def test_golden_cost_budget(
    client: Client, keys: Keys, priced: dict[str, dict[str, str]]
) -> None:
    """tokens of m1 at 2.00 per 1000 (acme's override of a 3.00 list price); tokens of m2
    graduated: the month's first 1000 at 1.00 per 1000, the rest at 0.50. Key k1 uses 1500 of m1
    and 1000 of m2; key k2 uses 2000 of m2, all today.

    m2's month: 3000 tokens cost 1000 x 0.001 + 2000 x 0.0005 = 2.00, so 1/1.5 milli per token:
    k1: 1500 x 0.002 + 1000 x 2.00 / 3000 = 3.00 + 0.666666666667 = 3.666666666667
    k2: 2000 x 2.00 / 3000 = 1.333333333333; everything: 3.00 + 2.00 = 5.00."""
    m1, m2 = {"model": "m1"}, {"model": "m2"}
    await create_price(client, keys, "tokens", unit_amount="3", match=m1, per_units="1000")
    await create_price(
        client, keys, "tokens", unit_amount="2", match=m1, per_units="1000", tenant_id="acme"
    )
    tiers = [{"up_to": "1000", "unit_amount": "1"}, {"up_to": None, "unit_amount": "0.5"}]
    await create_price(client, keys, "tokens", match=m2, tiers=tiers, per_units="1000")
    k1 = await post_budget(client, keys, "day", "4", {"api_key_id": "k1"})
    k2 = await post_budget(client, keys, "month", "4", {"api_key_id": "k2"})
    everything = await post_budget(client, keys, "month", "5", {})
    now = datetime.now(UTC).isoformat()
    events = [
        ("a", "k1", "m1", 1500),
        ("b", "k1", "m2", 1000),
        ("c", "k2", "m2", 2000),
    ]
    await ingest(
        client,
        priced["ingest"],
        [
            {
                "tenant_id": "acme",
                "event_name": "tokens",
                "idempotency_key": key,
                "timestamp": now,
                "value": value,
                "api_key_id": api_key,
                "model": model,
            }
            for key, api_key, model, value in events
        ],
    )
    one = await standings(client, priced["read"], api_key_id="k1")
    assert one[k1]["used"] == "3.666666666667"
    assert one[k1]["remaining"] == "0.333333333333"
    assert one[k1]["exhausted"] is False
    assert one[everything]["used"] == "5.000000000000"
    assert one[everything]["exhausted"] is True
    assert k2 not in one
    two = await standings(client, priced["read"], api_key_id="k2")
    assert two[k2]["used"] == "1.333333333333"
    assert await costs_total(client, priced["billing"], "month", {}) == "5.000000000000"


# -- read-your-writes ---------------------------------------------------------------------


async def test_check_sees_cost_of_every_acknowledged_event(
    client: Client, keys: Keys, priced: dict[str, dict[str, str]]
) -> None:
    await create_price(client, keys, "tokens", unit_amount="0.5")  # per token
    budget_id = await post_budget(client, keys, "day", "10", {"user_id": "u1"})
    for n in range(1, 9):
        event = {
            "tenant_id": "acme",
            "event_name": "tokens",
            "idempotency_key": f"single-{n}",
            "timestamp": datetime.now(UTC).isoformat(),
            "value": 3,
            "user_id": "u1",
        }
        # One event at a time, through the group committer: acknowledged means counted.
        answer = await client.post("/v1/events", json=event, headers=priced["ingest"])
        assert answer.status_code == 202, answer.text
        standing = (await standings(client, priced["read"], user_id="u1"))[budget_id]
        assert Decimal(standing["used"]) == Decimal("1.5") * n
        assert standing["exhausted"] is (n >= 7)
    check = await client.get(
        "/v1/budgets/check", params={"tenant_id": "acme", "user_id": "u1"}, headers=priced["read"]
    )
    assert check.json()["allowed"] is False


# -- periods in the tenant's zone ---------------------------------------------------------


async def test_day_and_month_periods_are_the_tenants(
    client: Client, keys: Keys, priced: dict[str, dict[str, str]]
) -> None:
    await create_price(client, keys, "tokens", unit_amount="1")
    day = await post_budget(client, keys, "day", "1000", {})
    month = await post_budget(client, keys, "month", "1000", {})
    day_start, month_start = period_start("day"), period_start("month")
    events = [
        # Just before today (local): yesterday's, and last month's when today is the 1st.
        (day_start - timedelta(microseconds=1), 7),
        (day_start, 5),
        (datetime.now(UTC), 2),
    ]
    if month_start < day_start:
        events.append((month_start, 11))  # earlier this month: the month's, not the day's
    await ingest(
        client,
        priced["ingest"],
        [
            {
                "tenant_id": "acme",
                "event_name": "tokens",
                "idempotency_key": f"p{n}",
                "timestamp": ts.isoformat(),
                "value": value,
            }
            for n, (ts, value) in enumerate(events)
        ],
    )
    shown = await standings(client, priced["read"])
    zone = ZoneInfo(ZONE)
    assert datetime.fromisoformat(shown[day]["period_start"]) == day_start
    assert datetime.fromisoformat(shown[day]["period_end"]) == (
        (day_start.astimezone(zone) + timedelta(days=1)).replace(hour=0).astimezone(UTC)
    )
    assert datetime.fromisoformat(shown[month]["period_start"]) == month_start
    assert shown[day]["used"] == "7.000000000000"
    # Yesterday's 7 and the 11 are this month's unless today is the 1st.
    expected_month = 7 + (7 + 11 if month_start < day_start else 0)
    assert Decimal(shown[month]["used"]) == expected_month
    for budget_id, period in ((day, "day"), (month, "month")):
        assert shown[budget_id]["used"] == await costs_total(client, priced["billing"], period, {})


# -- thresholds, exactly once ---------------------------------------------------------------


async def test_a_cost_threshold_crossed_by_50_concurrent_batches_fires_once(
    client: Client, keys: Keys, priced: dict[str, dict[str, str]], pg_pool: asyncpg.Pool
) -> None:
    # Graduated: the month's first 40 tokens at 0.50, the rest at 1.50, so each batch's cost
    # depends on the whole month; 50 batches of 2 tokens: 40 x 0.5 + 60 x 1.5 = 110.
    tiers = [{"up_to": "40", "unit_amount": "0.5"}, {"up_to": None, "unit_amount": "1.5"}]
    await create_price(client, keys, "tokens", tiers=tiers)
    await pg_pool.execute(
        "INSERT INTO webhook_endpoints (id, url, event_types, secret) "
        "VALUES (gen_random_uuid(), 'https://hooks.example.com/budgets', "
        "ARRAY['budget.threshold_reached'], 'whsec_dGVzdA==')"
    )
    budget_id = await post_budget(
        client, keys, "month", "100", {}, thresholds_percent=[10, 50, 100, 200]
    )
    now = datetime.now(UTC).isoformat()

    async def send(n: int) -> None:
        events = [
            {
                "tenant_id": "acme",
                "event_name": "tokens",
                "idempotency_key": f"b{n}-{i}",
                "timestamp": now,
                "value": 1,
                "user_id": f"u{n % 7}",
            }
            for i in range(2)
        ]
        await ingest(client, priced["ingest"], events)

    await asyncio.gather(*(send(n) for n in range(50)))

    alerts = await pg_pool.fetch(
        "SELECT threshold_percent, used FROM budget_alerts WHERE budget_id = $1 "
        "ORDER BY threshold_percent",
        budget_id,
    )
    assert [a["threshold_percent"] for a in alerts] == [10, 50, 100]
    # Each recorded with the spend of the transaction that crossed it, consistent with it.
    for alert in alerts:
        assert alert["used"] >= alert["threshold_percent"]
    shown = await standings(client, priced["read"])
    assert shown[budget_id]["used"] == "110.000000000000"
    assert shown[budget_id]["exhausted"] is True
    messages = await pg_pool.fetch(
        "SELECT payload FROM webhook_deliveries WHERE type = 'budget.threshold_reached'"
    )
    assert len(messages) == 3
    assert '"limit":{"cost":"100","currency":"USD"}' in messages[0]["payload"]
    # More usage in the period fires nothing more.
    await send(50)
    assert await pg_pool.fetchval("SELECT count(*) FROM budget_alerts") == 3


async def test_a_price_on_a_key_the_cells_did_not_keep_is_still_applied(
    client: Client, keys: Keys, priced: dict[str, dict[str, str]]
) -> None:
    """Cells keep only the keys prices matched on when the usage came in (here the model); a
    price created later on another key (the user) prices that usage from the rollup store."""
    await create_price(client, keys, "tokens", unit_amount="1", match={"model": "m1"})
    budget_id = await post_budget(client, keys, "month", "1000", {})
    now = datetime.now(UTC).isoformat()
    await ingest(
        client,
        priced["ingest"],
        [
            {
                "tenant_id": "acme",
                "event_name": "tokens",
                "idempotency_key": f"k{n}",
                "timestamp": now,
                "value": 10,
                "model": "m1",
                "user_id": user,
            }
            for n, user in enumerate(["u1", "u2", "u1"])
        ],
    )
    assert (await standings(client, priced["read"]))[budget_id]["used"] == "30.000000000000"
    # acme's own price for u1's tokens, from before the usage: u1's 20 tokens at 0.25.
    await create_price(
        client, keys, "tokens", unit_amount="0.25", match={"user_id": "u1"}, tenant_id="acme"
    )
    used = (await standings(client, priced["read"]))[budget_id]["used"]
    assert used == "15.000000000000"
    assert used == await costs_total(client, priced["billing"], "month", {})


async def test_meters_billing_one_value_of_the_period_count_as_costs_count_them(
    client: Client, keys: Keys, priced: dict[str, dict[str, str]], pg_pool: asyncpg.Pool
) -> None:
    """A `last` meter bills the period's latest value and a `max` meter its largest: no running
    sum holds those, so such usage is priced from the rollup store, and `used` still equals
    GET /v1/costs (and a threshold is still decided when that usage comes in)."""
    await create_meter(client, keys, "seats", "Seats", "last")
    await create_meter(client, keys, "peak", "Peak", "max")
    await create_price(client, keys, "seats", unit_amount="2")
    await create_price(client, keys, "peak", unit_amount="0.5")
    budget_id = await post_budget(client, keys, "month", "20", {}, thresholds_percent=[50])
    now = datetime.now(UTC)
    await ingest(
        client,
        priced["ingest"],
        [
            {"tenant_id": "acme", "event_name": name, "idempotency_key": f"{name}{n}",
             "timestamp": (now - timedelta(seconds=10 - n)).isoformat(), "value": value}
            for n, (name, value) in enumerate(
                [("seats", 3), ("peak", 4), ("seats", 5), ("peak", 9), ("peak", 2)]
            )
        ],
    )  # fmt: skip
    # The latest seats (5) at 2.00 and the largest peak (9) at 0.50: 14.50, 72.5 % of 20.
    used = (await standings(client, priced["read"]))[budget_id]["used"]
    assert used == "14.500000000000"
    assert used == await costs_total(client, priced["billing"], "month", {})
    alerts = await pg_pool.fetch(
        "SELECT threshold_percent FROM budget_alerts WHERE budget_id = $1", UUID(budget_id)
    )
    assert [row["threshold_percent"] for row in alerts] == [50]
