"""Hand-worked costs: tiers shared among users in proportion to their calls, a tenant override,
a relative price, unpriced usage, daily windows, a range across two invoice months, and the
answer's order, limit and total."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from metering_client.results import Costs as ClientCosts
from service.settings import Settings
from tests.conftest import Keys
from tests.costs.conftest import Client, costs
from tests.invoices.conftest import (
    Record,
    Usage,
    create_meter,
    create_price,
    create_tenant,
    preview,
)

NOV = {"from_": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
NOV_QUERY = {"from": NOV["from_"], "to": NOV["to"]}


@pytest.fixture
async def acme(client: Client, keys: Keys, record: Record) -> dict[str, str]:
    """acme (UTC, USD) in November 2026:

    calls (count), graduated: the first 10 calls 1.00 each, the rest 0.50. u1 makes 8 calls
    (Nov 2), u2 6 and u3 2 (Nov 3): 16 calls, 10 x 1.00 + 6 x 0.50 = 13.00, shared 8/16,
    6/16, 2/16: 6.5, 4.875, 1.625.
    tokens (sum): gpt-4o 2.50 per million, acme's override 2.00; llama has no price. u1 uses
    1,000,000 gpt-4o tokens: 2.00; u2 500 llama tokens: unpriced.
    cached (sum): 0.5 times tokens for gpt-4o. u1 200,000: 0.5 x 2.00 / 1M x 200,000 = 0.20.
    In December u1 makes 4 more calls: 4.00 (the tiers start again)."""
    await create_tenant(client, keys, "acme", timezone="UTC", currency="USD")
    await create_meter(client, keys, "calls", "Calls", "count")
    await create_meter(client, keys, "tokens", "Tokens", "sum")
    await create_meter(client, keys, "cached", "Cached tokens", "sum")
    await create_meter(client, keys, "latency", "Latency", "sum", billable=False, currency=None)
    await create_price(
        client,
        keys,
        "calls",
        tiers=[{"up_to": "10", "unit_amount": "1.00"}, {"up_to": None, "unit_amount": "0.50"}],
    )
    million = {"per_units": "1000000", "match": {"model": "gpt-4o"}}
    await create_price(client, keys, "tokens", unit_amount="2.50", **million)
    await create_price(client, keys, "tokens", unit_amount="2.00", tenant_id="acme", **million)
    await create_price(
        client,
        keys,
        "cached",
        match={"model": "gpt-4o"},
        relative_to={"meter": "tokens", "factor": "0.5"},
    )
    usage = [
        *[Usage("calls", "2026-11-02T10:00:00+00:00", user_id="u1") for _ in range(8)],
        *[Usage("calls", "2026-11-03T10:00:00+00:00", user_id="u2") for _ in range(6)],
        *[Usage("calls", "2026-11-03T11:00:00+00:00", user_id="u3") for _ in range(2)],
        Usage("tokens", "2026-11-02T10:00:00+00:00", 1_000_000, model="gpt-4o", user_id="u1"),
        Usage("tokens", "2026-11-03T10:00:00+00:00", 500, model="llama", user_id="u2"),
        Usage("cached", "2026-11-02T10:00:00+00:00", 200_000, model="gpt-4o", user_id="u1"),
        Usage("latency", "2026-11-02T10:00:00+00:00", 120, user_id="u1"),
        *[Usage("calls", "2026-12-02T10:00:00+00:00", user_id="u1") for _ in range(4)],
    ]
    assert await record("acme", usage) == len(usage)
    return await keys.make("read", tenant_id="acme")


def by_group(answer: dict[str, Any], key: str) -> dict[str | None, dict[str, Any]]:
    return {row["group"][key]: row for row in answer["rows"]}


async def test_costs_by_user_share_tiers_and_add_up_to_the_invoice(
    client: Client, keys: Keys, acme: dict[str, str]
) -> None:
    answer = await costs(client, acme, **NOV, group_by="user_id", order_by="-cost")
    assert answer["tenant_id"] == "acme"
    assert answer["currency"] == "USD"
    assert answer["from"] == "2026-11-01T00:00:00Z"
    assert answer["to"] == "2026-12-01T00:00:00Z"
    assert answer["timezone"] == "UTC"
    assert answer["window_size"] is None
    assert answer["group_by"] == ["user_id"]
    assert answer["truncated"] is False
    assert [row["group"] for row in answer["rows"]] == [
        {"user_id": "u1"},
        {"user_id": "u2"},
        {"user_id": "u3"},
    ]
    u1, u2, u3 = answer["rows"]
    assert u1["cost"] == "8.700000000000"
    assert u1["meters"] == [
        {"meter": "cached", "quantity": "200000", "cost": "0.200000000000"},
        {"meter": "calls", "quantity": "8", "cost": "6.500000000000"},
        {"meter": "tokens", "quantity": "1000000", "cost": "2.000000000000"},
    ]
    assert u2["cost"] == "4.875000000000"
    assert u2["meters"] == [{"meter": "calls", "quantity": "6", "cost": "4.875000000000"}]
    assert u3["cost"] == "1.625000000000"
    assert answer["total"] == "15.200000000000"
    assert answer["unpriced"] == [{"meter": "tokens", "quantity": "500"}]
    assert (u1["window_start"], u1["window_end"]) == (answer["from"], answer["to"])

    [invoice] = await preview(client, await keys.make("billing"), "acme", "2026-11")
    assert Decimal(invoice["total"]) == Decimal(answer["total"])


async def test_daily_windows_share_the_month_tiers(client: Client, acme: dict[str, str]) -> None:
    answer = await costs(client, acme, **NOV, window_size="day", meter="calls")
    assert [(row["window_start"], row["cost"]) for row in answer["rows"]] == [
        ("2026-11-02T00:00:00Z", "6.500000000000"),
        ("2026-11-03T00:00:00Z", "6.500000000000"),
    ]
    assert answer["rows"][0]["window_end"] == "2026-11-03T00:00:00Z"
    assert answer["total"] == "13.000000000000"
    assert answer["unpriced"] == []


async def test_a_range_across_two_months_takes_each_months_tiers(
    client: Client, acme: dict[str, str]
) -> None:
    """From Nov 3 to Dec 3: u2 and u3's November calls keep their share of November's tiers
    (4.875 + 1.625), u1's December calls are December's first tier (4.00)."""
    answer = await costs(
        client,
        acme,
        from_="2026-11-03T00:00:00Z",
        to="2026-12-03T00:00:00Z",
        group_by="user_id",
        meter="calls",
        window_size="month",
    )
    rows = [(row["window_start"], row["group"]["user_id"], row["cost"]) for row in answer["rows"]]
    assert rows == [
        ("2026-11-03T00:00:00Z", "u2", "4.875000000000"),
        ("2026-11-03T00:00:00Z", "u3", "1.625000000000"),
        ("2026-12-01T00:00:00Z", "u1", "4.000000000000"),
    ]
    assert answer["total"] == "10.500000000000"


async def test_limit_keeps_the_top_rows_and_the_total_covers_all(
    client: Client, acme: dict[str, str]
) -> None:
    answer = await costs(client, acme, **NOV, group_by="user_id", order_by="cost", limit=2)
    assert [row["group"]["user_id"] for row in answer["rows"]] == ["u3", "u2"]
    assert answer["truncated"] is True
    assert answer["total"] == "15.200000000000"
    assert answer["limit"] == 2
    assert answer["order_by"] == "cost"


async def test_filters_and_groups_by_model(client: Client, acme: dict[str, str]) -> None:
    answer = await costs(client, acme, **NOV, group_by="model", filter="user_id:u1")
    groups = by_group(answer, "model")
    assert set(groups) == {None, "gpt-4o"}
    assert groups[None]["cost"] == "6.500000000000"  # u1's calls carry no model
    assert groups["gpt-4o"]["cost"] == "2.200000000000"
    assert answer["total"] == "8.700000000000"
    assert answer["unpriced"] == []  # the llama tokens are u2's


async def test_another_currency_has_no_cost(client: Client, acme: dict[str, str]) -> None:
    answer = await costs(client, acme, **NOV, currency="EUR")
    assert answer["currency"] == "EUR"
    assert answer["rows"] == []
    assert answer["total"] == "0.000000000000"


async def test_concurrent_requests_beyond_the_pool_all_answer(
    client: Client, acme: dict[str, str], settings: Settings
) -> None:
    """A request reads on its one connection: more concurrent requests than the pool holds
    wait their turn, none waits for a second connection while holding one (which timed out
    with 503s when the reads took a connection of their own)."""
    answers = await asyncio.gather(
        *(
            client.get(
                "/v1/costs",
                params={**NOV_QUERY, "group_by": "user_id"},
                headers=acme,
            )
            for _ in range(settings.db_pool_size + 6)
        )
    )
    assert {answer.status_code for answer in answers} == {200}
    assert {answer.json()["total"] for answer in answers} == {"15.200000000000"}


async def test_the_python_clients_types_read_the_answer(
    client: Client, acme: dict[str, str]
) -> None:
    """metering_client decodes GET /v1/costs into its typed `Costs`: the shapes agree."""
    response = await client.get(
        "/v1/costs", params={**NOV_QUERY, "group_by": "user_id"}, headers=acme
    )
    typed = msgspec.json.decode(response.content, type=ClientCosts)
    assert typed.total == Decimal("15.2")
    assert [row.group["user_id"] for row in typed.rows] == ["u1", "u2", "u3"]
    assert typed.rows[0].meters[0].cost == Decimal("0.2")
    assert typed.unpriced[0].quantity == Decimal(500)
