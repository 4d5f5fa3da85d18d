"""Costs are the invoice's amounts, shared out: for random events and prices (a tenant
override, graduated tiers filled across a price change, relative prices resolved through an
override, a tiered reference and an effective-date change inside the month, a `last` meter),
over any grouping, daily windows or none, a filter or none, a range that starts inside the
month or not:

- every row and every meter of a row costs what a naive computation over the raw events says
  (written here independently: each event's price by hand, each rate's month amount, each
  group's share in proportion to its quantity);
- `unpriced` lists the quantities no price covers;
- over the whole month without filters, `total` and each meter's costs equal the invoice
  preview's line amounts before rounding (quantity x unit amount / per units, per line), and
  the unpriced quantities equal its unpriced lines.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.common.money import MONEY_CONTEXT
from service.events.repository import EventRow, store_events
from tests.conftest import Keys
from tests.costs.conftest import Client, costs
from tests.invoices.conftest import create_meter, create_price, create_tenant, preview

TENANTS = {"acme": "Europe/Berlin", "globex": "UTC"}
PERIOD = "2026-10"  # Berlin leaves summer time on the 25th
CHANGE = datetime(2026, 10, 16, 0, 0, tzinfo=UTC)  # prices change here
SINCE = "2026-01-01T00:00:00Z"
AGGREGATION = {"tokens": "sum", "cached": "sum", "calls": "count", "seats": "last"}
MODELS = ["m1", "m2", "m3", None]
USERS = ["u1", "u2", None]
PROJECTS = ["p1", "p2", None]
GROUPINGS = [[], ["user_id"], ["model"], ["user_id", "model"], ["project_id"]]
TWELVE = Decimal("1e-12")
Tiers = list[tuple[Decimal | None, Decimal]]

amounts = st.decimals(min_value=0, max_value=50, places=2)
factors = st.decimals(min_value=Decimal("0.01"), max_value=3, places=2)
catalogs = st.fixed_dictionaries(
    {
        "a1": amounts,  # tokens, model m1, per 1000, until CHANGE
        "a1b": amounts,  # the same from CHANGE
        "o1": amounts,  # acme's override of tokens for m1, per 1000
        "t2": st.integers(1, 20_000),  # tokens for m2: graduated, first tier up to t2
        "b1": amounts,
        "b2": amounts,
        "f1": factors,  # cached for m1: f1 times tokens
        "f2": factors,  # cached for m2: f2 times tokens (its first tier)
        "tc": st.integers(1, 15),  # calls: graduated, first tier up to tc
        "c1": amounts,  # until CHANGE
        "c2": amounts,
        "c3": amounts,  # from CHANGE, the same bounds: continues the tiers
        "c4": amounts,
        "oc": amounts,  # acme's override of calls for project p1
        "s1": amounts,  # seats, until CHANGE
        "s2": amounts,  # from CHANGE
    }
)
events = st.lists(
    st.fixed_dictionaries(
        {
            "meter": st.sampled_from(list(AGGREGATION)),
            "at": st.one_of(st.floats(0, 0.9999), st.just("change")),
            "value": st.decimals(min_value=0, max_value=10_000, places=2),
            "model": st.sampled_from(MODELS),
            "user_id": st.sampled_from(USERS),
            "project_id": st.sampled_from(PROJECTS),
        }
    ),
    max_size=40,
)


def month(zone: str) -> tuple[datetime, datetime]:
    tz = ZoneInfo(zone)
    return (
        datetime(2026, 10, 1, tzinfo=tz).astimezone(UTC),
        datetime(2026, 11, 1, tzinfo=tz).astimezone(UTC),
    )


@pytest.fixture
async def setup(client: Client, keys: Keys) -> dict[str, dict[str, str]]:
    for tenant_id, zone in TENANTS.items():
        await create_tenant(client, keys, tenant_id, timezone=zone)
    await create_meter(client, keys, "tokens", "Tokens", "sum")
    await create_meter(client, keys, "cached", "Cached", "sum")
    await create_meter(client, keys, "calls", "Calls", "count")
    await create_meter(client, keys, "seats", "Seats", "last")
    return {"billing": await keys.make("billing"), "read": await keys.make("read")}


async def create_prices(client: Client, keys: Keys, c: dict[str, Any]) -> None:
    change = CHANGE.isoformat()
    m1, m2 = {"model": "m1"}, {"model": "m2"}
    thousand = {"per_units": "1000"}
    await create_price(
        client, keys, "tokens", unit_amount=str(c["a1"]), match=m1, effective_to=change, **thousand
    )
    await create_price(
        client,
        keys,
        "tokens",
        unit_amount=str(c["a1b"]),
        match=m1,
        effective_from=change,
        **thousand,
    )
    await create_price(
        client, keys, "tokens", unit_amount=str(c["o1"]), match=m1, tenant_id="acme", **thousand
    )
    tiers = [
        {"up_to": str(c["t2"]), "unit_amount": str(c["b1"])},
        {"up_to": None, "unit_amount": str(c["b2"])},
    ]
    await create_price(client, keys, "tokens", match=m2, tiers=tiers)
    for match, factor in ((m1, c["f1"]), (m2, c["f2"])):
        relative = {"meter": "tokens", "factor": str(factor)}
        await create_price(client, keys, "cached", match=match, relative_to=relative)
    for first, second, bounds in (("c1", "c2", {"effective_to": change}), ("c3", "c4", {})):
        tiers = [
            {"up_to": str(c["tc"]), "unit_amount": str(c[first])},
            {"up_to": None, "unit_amount": str(c[second])},
        ]
        if not bounds:
            bounds = {"effective_from": change}
        await create_price(client, keys, "calls", tiers=tiers, **bounds)
    await create_price(
        client,
        keys,
        "calls",
        unit_amount=str(c["oc"]),
        match={"project_id": "p1"},
        tenant_id="acme",
    )
    await create_price(client, keys, "seats", unit_amount=str(c["s1"]), effective_to=change)
    await create_price(client, keys, "seats", unit_amount=str(c["s2"]), effective_from=change)


# -- the naive computation ----------------------------------------------------------------


@dataclass(frozen=True)
class Ev:
    id: int
    meter: str
    ts: datetime
    quantity: Decimal
    attributes: dict[str, str | None]


@dataclass(frozen=True)
class NaiveRate:
    """How usage at one price is charged: per unit (`per_unit`) or through `tiers` (per unit
    amounts), continuing after `follows` (rates of the same chain that came before)."""

    key: str
    per_unit: Decimal | None = None
    tiers: Tiers | None = None
    follows: tuple[str, ...] = ()


def naive_rate(tenant: str, e: Ev, c: dict[str, Any]) -> NaiveRate | None:
    model, before = e.attributes["model"], e.ts < CHANGE
    k = Decimal(1000)
    if e.meter == "tokens":
        if model == "m1":
            if tenant == "acme":
                return NaiveRate("o1", per_unit=c["o1"] / k)
            return (
                NaiveRate("a1", per_unit=c["a1"] / k)
                if before
                else NaiveRate("a1b", per_unit=c["a1b"] / k)
            )
        if model == "m2":
            return NaiveRate("p2", tiers=[(Decimal(c["t2"]), c["b1"]), (None, c["b2"])])
        return None
    if e.meter == "cached":
        if model == "m1":
            base = c["o1"] if tenant == "acme" else c["a1"] if before else c["a1b"]
            which = "o1" if tenant == "acme" else "a1" if before else "a1b"
            return NaiveRate(f"r1/{which}", per_unit=c["f1"] * base / k)
        if model == "m2":
            return NaiveRate("r2", per_unit=c["f2"] * c["b1"])  # the tier's per unit amount
        return None
    if e.meter == "calls":
        if tenant == "acme" and e.attributes["project_id"] == "p1":
            return NaiveRate("oc", per_unit=c["oc"])
        if before:
            return NaiveRate("c1", tiers=[(Decimal(c["tc"]), c["c1"]), (None, c["c2"])])
        return NaiveRate(
            "c3", tiers=[(Decimal(c["tc"]), c["c3"]), (None, c["c4"])], follows=("c1",)
        )
    return NaiveRate("s1", per_unit=c["s1"]) if before else NaiveRate("s2", per_unit=c["s2"])


def fill(tiers: Tiers, offset: Decimal, quantity: Decimal) -> Decimal:
    """What (offset, offset + quantity] costs through graduated tiers."""
    amount, lower = Decimal(0), Decimal(0)
    for up_to, unit in tiers:
        upper = offset + quantity if up_to is None else up_to
        amount += max(Decimal(0), min(upper, offset + quantity) - max(lower, offset)) * unit
        lower = upper
    return amount


def billed(events: list[Ev]) -> list[Ev]:
    """The events a month bills: every sum and count event, and the latest seats event."""
    seats = [e for e in events if e.meter == "seats"]
    latest = [max(seats, key=lambda e: (e.ts, e.id))] if seats else []
    return [e for e in events if e.meter != "seats"] + [e for e in latest if e.quantity != 0]


def naive_costs(
    tenant: str,
    month_events: list[Ev],
    shown: list[Ev],
    c: dict[str, Any],
    place: Any,
) -> tuple[dict[Any, dict[str, list[Decimal]]], dict[str, Decimal]]:
    """Per (window start, group) and meter [quantity, cost] of the `shown` events, and the
    unpriced quantity per meter; rates' amounts from all of the month's events."""
    with localcontext(MONEY_CONTEXT):
        quantity: dict[str, Decimal] = defaultdict(Decimal)
        rates: dict[str, NaiveRate] = {}
        for e in billed(month_events):
            rate = naive_rate(tenant, e, c)
            if rate is not None:
                quantity[rate.key] += e.quantity
                rates[rate.key] = rate
        amount: dict[str, Decimal] = {}
        for key, rate in rates.items():
            if rate.tiers is None:
                assert rate.per_unit is not None
                amount[key] = quantity[key] * rate.per_unit
            else:
                offset = sum((quantity[k] for k in rate.follows), Decimal(0))
                amount[key] = fill(rate.tiers, offset, quantity[key])
        rows: dict[Any, dict[str, list[Decimal]]] = defaultdict(dict)
        unpriced: dict[str, Decimal] = defaultdict(Decimal)
        shown_ids = {e.id for e in shown}
        for e in billed(month_events):
            if e.id not in shown_ids or e.quantity == 0:
                continue
            rate = naive_rate(tenant, e, c)
            if rate is None:
                unpriced[e.meter] += e.quantity
                continue
            entry = rows[place(e)].setdefault(e.meter, [Decimal(0), Decimal(0)])
            entry[0] += e.quantity
            entry[1] += e.quantity * amount[rate.key] / quantity[rate.key]
    return rows, unpriced


def cost_text(value: Decimal) -> str:
    shown = value.quantize(TWELVE, rounding=ROUND_HALF_UP, context=MONEY_CONTEXT)
    return format(shown.copy_abs() if shown.is_zero() else shown, "f")


def quantity_text(value: Decimal) -> str:
    return format(value.normalize(MONEY_CONTEXT), "f")


def unrounded_amount(line: dict[str, Any]) -> Decimal:
    """A preview line's amount before rounding: its tiers' exact amounts where it lists them
    (one line per tiered price), else quantity x unit amount / per units (a line per tier)."""
    if line.get("tiers"):
        return sum((Decimal(tier["amount"]) for tier in line["tiers"]), Decimal(0))
    return Decimal(line["quantity"]) * Decimal(line["unit_amount"]) / Decimal(line["per_units"])


# -- the test -----------------------------------------------------------------------------


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tenant=st.sampled_from(list(TENANTS)),
    catalog=catalogs,
    specs=events,
    group_by=st.sampled_from(GROUPINGS),
    daily=st.booleans(),
    skip_days=st.sampled_from([0, 0, 3, 20]),
    user_filter=st.sampled_from([None, None, "u1", "u2"]),
)
async def test_costs_equal_the_invoice_and_a_naive_computation(
    client: Client,
    keys: Keys,
    setup: dict[str, dict[str, str]],
    pg_pool: asyncpg.Pool,
    tenant: str,
    catalog: dict[str, Any],
    specs: list[dict[str, Any]],
    group_by: list[str],
    daily: bool,
    skip_days: int,
    user_filter: str | None,
) -> None:
    await pg_pool.execute("TRUNCATE events, rollup_rows, model_rollup_rows, rollup_cube, prices")
    await create_prices(client, keys, catalog)
    meter_ids = {r["event_name"]: r["id"] for r in await pg_pool.fetch("SELECT * FROM meters")}
    zone = ZoneInfo(TENANTS[tenant])
    start, end = month(TENANTS[tenant])
    rows: list[EventRow] = []
    for index, spec in enumerate(specs):
        at = spec["at"]
        ts = (
            CHANGE
            if at == "change"
            else start + timedelta(seconds=int((end - start).total_seconds() * at))
        )
        value = None if spec["meter"] == "calls" else spec["value"]
        key = f"e{index}"
        rows.append(
            EventRow(
                tenant_id=tenant,
                meter_id=meter_ids[spec["meter"]],
                idempotency_key=key,
                payload_hash=hashlib.sha256(key.encode()).digest(),
                value=value,
                ts=ts,
                org_id=None,
                project_id=spec["project_id"],
                api_key_id=None,
                user_id=spec["user_id"],
                model=spec["model"],
                dimensions_json=json.dumps({}),
                metadata_json=None,
            )
        )
    async with pg_pool.acquire() as connection, connection.transaction():
        stored = await store_events(connection, rows)
    month_events = [
        Ev(
            id=stored[(tenant, row.idempotency_key)].id,
            meter=spec["meter"],
            ts=row.ts,
            quantity=Decimal(1) if row.value is None else row.value,
            attributes={k: spec[k] for k in ("model", "user_id", "project_id")},
        )
        for row, spec in zip(rows, specs, strict=True)
    ]

    range_start = start + timedelta(days=skip_days)
    shown = [
        e
        for e in month_events
        if e.ts >= range_start and (user_filter is None or e.attributes["user_id"] == user_filter)
    ]

    def place(e: Ev) -> tuple[datetime, tuple[str | None, ...]]:
        window = range_start
        if daily:
            local = e.ts.astimezone(zone)
            midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
            window = max(range_start, midnight.astimezone(UTC))
        return window, tuple(e.attributes[key] for key in group_by)

    expected_rows, expected_unpriced = naive_costs(tenant, month_events, shown, catalog, place)

    params: dict[str, Any] = {
        "tenant_id": tenant,
        "from_": range_start.isoformat(),
        "to": end.isoformat(),
        "group_by": group_by,
    }
    if daily:
        params["window_size"] = "day"
    if user_filter is not None:
        params["filter"] = f"user_id:{user_filter}"
    answer = await costs(client, setup["read"], **params)

    got = {
        (
            datetime.fromisoformat(row["window_start"]),
            tuple(row["group"][key] for key in group_by),
        ): row
        for row in answer["rows"]
    }
    assert set(got) == set(expected_rows), (got.keys(), expected_rows.keys())
    for place_key, meters in expected_rows.items():
        row = got[place_key]
        assert row["meters"] == [
            {"meter": name, "quantity": quantity_text(q), "cost": cost_text(cost)}
            for name, (q, cost) in sorted(meters.items())
        ], place_key
        assert row["cost"] == cost_text(sum((cost for _, cost in meters.values()), Decimal(0)))
    expected_total = sum(
        (cost for meters in expected_rows.values() for _, cost in meters.values()), Decimal(0)
    )
    assert answer["total"] == cost_text(expected_total)
    # The shown figures are each quantized: they add up to the total within half a unit each.
    shown_sum = sum((Decimal(row["cost"]) for row in answer["rows"]), Decimal(0))
    assert abs(shown_sum - Decimal(answer["total"])) <= len(answer["rows"]) * TWELVE / 2
    assert answer["unpriced"] == [
        {"meter": name, "quantity": quantity_text(q)}
        for name, q in sorted(expected_unpriced.items())
        if q != 0
    ]

    if skip_days or user_filter is not None:
        return
    invoice_amount: dict[str, Decimal] = defaultdict(Decimal)
    invoice_unpriced: dict[str, Decimal] = defaultdict(Decimal)
    with localcontext(MONEY_CONTEXT):
        for invoice in await preview(client, setup["billing"], tenant, PERIOD):
            for line in invoice["lines"]:
                if line.get("kind", "usage") != "usage":
                    continue  # costs are usage's (no recurring charges or commitments here)
                quantity = Decimal(line["quantity"])
                if line["unpriced"]:
                    invoice_unpriced[line["meter"]] += quantity
                    continue
                invoice_amount[line["meter"]] += unrounded_amount(line)
        by_meter: dict[str, Decimal] = defaultdict(Decimal)
        for row in answer["rows"]:
            for entry in row["meters"]:
                by_meter[entry["meter"]] += Decimal(entry["cost"])
    assert answer["total"] == cost_text(sum(invoice_amount.values(), Decimal(0)))
    for name in set(invoice_amount) | set(by_meter):
        assert abs(by_meter[name] - invoice_amount[name]) <= len(answer["rows"]) * TWELVE / 2
    assert {e["meter"]: Decimal(e["quantity"]) for e in answer["unpriced"]} == {
        name: q for name, q in invoice_unpriced.items() if q != 0
    }
