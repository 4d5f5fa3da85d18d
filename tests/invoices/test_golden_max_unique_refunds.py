"""Golden cases for `max` and `unique_count` meters and for refunds on `allow_negative` sum
meters, every figure worked out by hand.

Tenant `berlin` (Europe/Berlin), October 2026: its month runs from 2026-09-30T22:00Z to
2026-10-31T23:00Z, and summer time ends on 25 October (a 25-hour day).
"""

from __future__ import annotations

from typing import Any

import pytest

from service.rollups.fold import fold_rollups
from tests.conftest import Keys
from tests.invoices.conftest import (
    Client,
    Record,
    Usage,
    create_meter,
    create_price,
    create_tenant,
    finalized,
    preview,
)


@pytest.fixture
async def catalog(client: Client, keys: Keys) -> dict[str, str]:
    await create_tenant(client, keys, "berlin", timezone="Europe/Berlin")
    await create_meter(client, keys, "peak_sessions", "Peak sessions", "max", unit="sessions")
    await create_meter(
        client, keys, "active_users", "Active users", "unique_count", unique_key="user_id"
    )
    await create_meter(client, keys, "credits", "Credits", "sum", allow_negative=True)
    return await keys.make("read", name="dashboard")


async def usage(client: Client, key: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    query = [("tenant_id", "berlin")]
    for name, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            query.append(("from" if name == "from_" else name, str(item)))
    response = await client.get("/v1/usage", params=query, headers=key)
    assert response.status_code == 200, response.text
    return response.json()["rows"]  # type: ignore[no-any-return]


def values(rows: list[dict[str, Any]], *keys: str) -> list[tuple[Any, ...]]:
    return [
        (row["window_start"], *(row["group"][k] for k in keys), row["value"], row["count"])
        for row in rows
    ]


PEAKS = [
    Usage("peak_sessions", "2026-10-24T21:30:00+00:00", 5, model="gpt-4o"),  # 24th 23:30 CEST
    Usage("peak_sessions", "2026-10-24T22:15:00+00:00", 3, model="gpt-4o"),  # 25th 00:15 CEST
    Usage("peak_sessions", "2026-10-25T12:00:00+00:00", 9, model="claude"),  # 25th 13:00 CET
    Usage("peak_sessions", "2026-10-25T22:59:00+00:00", 4, model="gpt-4o"),  # 25th 23:59 CET
    Usage("peak_sessions", "2026-10-25T23:00:00+00:00", 2, model="claude"),  # 26th 00:00 CET
    Usage("peak_sessions", "2026-10-02T08:00:00+00:00", 14, model="gpt-4o"),
    Usage("peak_sessions", "2026-10-31T23:00:00+00:00", 40, model="gpt-4o"),  # November
]


async def test_max_over_days_in_berlin_across_the_end_of_summer_time(
    client: Client, catalog: dict[str, str], record: Record, pg_pool: Any
) -> None:
    await record("berlin", PEAKS)
    days = {
        "meter": "peak_sessions",
        "from_": "2026-10-24T00:00:00+02:00",
        "to": "2026-10-27T00:00:00+01:00",
        "window_size": "day",
        "timezone": "Europe/Berlin",
    }
    expected = [
        ("2026-10-24T00:00:00+02:00", "5", 1),
        ("2026-10-25T00:00:00+02:00", "9", 3),  # 25 hours: 3, 9 and 4
        ("2026-10-26T00:00:00+01:00", "2", 1),
    ]
    month = {**days, "from_": "2026-10-01T00:00:00+02:00", "to": "2026-11-01T00:00:00+01:00"}
    month["window_size"] = "month"
    for _ in range(2):  # from the 15-minute rows, then from the folded cube
        assert values(await usage(client, catalog, **days)) == expected
        by_model = await usage(client, catalog, **month, group_by="model")
        assert values(by_model, "model") == [
            ("2026-10-01T00:00:00+02:00", "claude", "9", 2),
            ("2026-10-01T00:00:00+02:00", "gpt-4o", "14", 4),
        ]
        async with pg_pool.acquire() as connection:
            await fold_rollups(connection)


async def test_a_max_invoice_line_bills_the_largest_value_through_tiers(
    client: Client, keys: Keys, catalog: dict[str, str], record: Record, billing: dict[str, str]
) -> None:
    # Up to 10 sessions at 2.00 each, then 1.00 each plus 5.00 on entering the second tier.
    await create_price(
        client,
        keys,
        "peak_sessions",
        tiers=[
            {"up_to": 10, "unit_amount": "2.00"},
            {"up_to": None, "unit_amount": "1.00", "flat_amount": "5.00"},
        ],
    )
    await record("berlin", PEAKS)
    [invoice] = await preview(client, billing, "berlin", "2026-10")
    [line] = invoice["lines"]
    # The month's largest value over every group (14, gpt-4o on the 2nd), not a sum of maxes
    # (14 + 9) nor of values: 10 x 2.00 + 4 x 1.00 + 5.00 = 29.00.
    assert (line["meter"], line["quantity"], line["amount"], line["tier"]) == (
        "peak_sessions",
        "14",
        "29.00",
        2,
    )
    assert [(t["tier"], t["quantity"], t["amount"]) for t in line["tiers"]] == [
        (1, "10", "20.00"),
        (2, "4", "9.00"),
    ]
    assert invoice["total"] == "29.00"


MONTHLY_ACTIVE = [
    # u1 on two days: one active user in the month.
    Usage("active_users", "2026-10-03T09:00:00+00:00", user_id="u1", model="gpt-4o"),
    Usage("active_users", "2026-10-20T09:00:00+00:00", user_id="u1", model="gpt-4o"),
    Usage("active_users", "2026-10-05T09:00:00+00:00", user_id="u2", model="gpt-4o"),
    Usage("active_users", "2026-10-06T09:00:00+00:00", user_id="u2", model="claude"),
    # 1 October 00:30 in Berlin: October, though September in UTC.
    Usage("active_users", "2026-09-30T22:30:00+00:00", user_id="u4", model="claude"),
    # 1 November 00:30 in Berlin: not October.
    Usage("active_users", "2026-10-31T23:30:00+00:00", user_id="u3", model="gpt-4o"),
    # No user: an event, but nobody to count.
    Usage("active_users", "2026-10-07T09:00:00+00:00", model="gpt-4o"),
]


async def test_monthly_active_users_count_each_user_once(
    client: Client,
    keys: Keys,
    catalog: dict[str, str],
    record: Record,
    billing: dict[str, str],
    pg_pool: Any,
) -> None:
    await create_price(client, keys, "active_users", unit_amount="0.50")
    await record("berlin", MONTHLY_ACTIVE)
    month = {
        "meter": "active_users",
        "from_": "2026-10-01T00:00:00+02:00",
        "to": "2026-11-01T00:00:00+01:00",
        "window_size": "month",
    }
    start = "2026-10-01T00:00:00+02:00"
    for _ in range(2):  # from the 15-minute rows, then from the folded cube
        assert values(await usage(client, catalog, **month)) == [(start, "3", 6)]
        # u2 used both models: counted once per model, once in the month.
        assert values(await usage(client, catalog, **month, group_by="model"), "model") == [
            (start, "claude", "2", 2),
            (start, "gpt-4o", "2", 4),
        ]
        weeks = await usage(
            client, catalog, **{**month, "window_size": "day", "filter": "user_id:u1"}
        )
        assert values(weeks) == [
            ("2026-10-03T00:00:00+02:00", "1", 1),
            ("2026-10-20T00:00:00+02:00", "1", 1),
        ]
        async with pg_pool.acquire() as connection:
            await fold_rollups(connection)
    [invoice] = await preview(client, billing, "berlin", "2026-10")
    [line] = invoice["lines"]
    assert (line["quantity"], line["amount"]) == ("3", "1.50")


async def test_refunds_reduce_a_sum_and_its_invoice_line(
    client: Client, keys: Keys, catalog: dict[str, str], record: Record, billing: dict[str, str]
) -> None:
    # 100 credits at 1.00 (plus 5.00 on entering the tier), then 0.50; a 50.00 minimum.
    await create_price(
        client,
        keys,
        "credits",
        minimum_amount="50.00",
        tiers=[
            {"up_to": 100, "unit_amount": "1.00", "flat_amount": "5.00"},
            {"up_to": None, "unit_amount": "0.50"},
        ],
    )
    await create_tenant(client, keys, "refunded", timezone="UTC")
    await record(
        "berlin",
        [
            Usage("credits", "2026-10-02T10:00:00+00:00", 100),
            Usage("credits", "2026-10-09T10:00:00+00:00", 50),
            Usage("credits", "2026-10-12T10:00:00+00:00", "-30"),  # a refund
        ],
    )
    month = {"meter": "credits", "from_": "2026-10-01T00:00:00+02:00"}
    rows = await usage(client, catalog, **month, to="2026-11-01T00:00:00+01:00")
    assert [(row["value"], row["count"]) for row in rows] == [("120", 3)]
    [invoice] = await preview(client, billing, "berlin", "2026-10")
    [line] = invoice["lines"]
    # 120: 100 x 1.00 + 5.00 + 20 x 0.50 = 115.00, above the minimum.
    assert (line["quantity"], line["amount"], invoice["total"]) == ("120", "115.00", "115.00")

    # Refunds beyond the month's usage: -30 credited at the first tier's rate, no flat
    # amount, no minimum: -30 x 1.00.
    await record(
        "refunded",
        [
            Usage("credits", "2026-10-02T10:00:00+00:00", 20),
            Usage("credits", "2026-10-03T10:00:00+00:00", "-50"),
        ],
    )
    response = await client.get(
        "/v1/usage",
        params={
            "tenant_id": "refunded",
            "meter": "credits",
            "from": "2026-10-01T00:00:00Z",
            "to": "2026-11-01T00:00:00Z",
        },
        headers=catalog,
    )
    [row] = response.json()["rows"]
    assert (row["value"], row["sum"], row["count"], row["avg"]) == ("-30", "-30", 2, "-15")
    await record("refunded", [Usage("credits", "2026-10-04T10:00:00+00:00", "0.000000000001")])
    response = await client.get(
        "/v1/usage",
        params={
            "tenant_id": "refunded",
            "meter": "credits",
            "from": "2026-10-01T00:00:00Z",
            "to": "2026-11-01T00:00:00Z",
        },
        headers=catalog,
    )
    # -29.999999999999 / 3 = -9.999999999999666…, half-up (away from zero) to 12 places.
    assert response.json()["rows"][0]["avg"] == "-10"
    await record("refunded", [Usage("credits", "2026-10-05T10:00:00+00:00", "-0.000000000001")])
    [invoice] = await finalized(client, billing, "refunded", "2026-10")
    [line] = invoice["lines"]
    assert (line["kind"], line["quantity"], line["amount"], line["tiers"]) == (
        "usage",
        "-30",
        "-30.00",
        [],
    )
    assert (invoice["subtotal"], invoice["total"]) == ("-30.00", "-30.00")


async def costs_by_model(client: Client, key: dict[str, str]) -> dict[str, Any]:
    response = await client.get(
        "/v1/costs",
        params=[("tenant_id", "berlin"), ("period", "2026-10"), ("group_by", "model")],
        headers=key,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def cost_rows(answer: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (row["group"]["model"], row["meters"][0]["quantity"], row["cost"]) for row in answer["rows"]
    ]


async def test_costs_share_a_max_charge_in_proportion_to_each_groups_max(
    client: Client, keys: Keys, catalog: dict[str, str], record: Record, billing: dict[str, str]
) -> None:
    await create_price(
        client,
        keys,
        "peak_sessions",
        tiers=[
            {"up_to": 10, "unit_amount": "2.00"},
            {"up_to": None, "unit_amount": "1.00", "flat_amount": "5.00"},
        ],
    )
    await record("berlin", PEAKS)
    answer = await costs_by_model(client, billing)
    # The month's charge, 29.00 (for 14), shared 9 : 14 between the models' maxes.
    assert cost_rows(answer) == [
        ("claude", "9", "11.347826086957"),  # 29 x 9 / 23
        ("gpt-4o", "14", "17.652173913043"),  # 29 x 14 / 23
    ]
    assert answer["total"] == "29.000000000000"


async def test_costs_share_a_unique_count_charge_in_proportion_to_distinct_counts(
    client: Client, keys: Keys, catalog: dict[str, str], record: Record, billing: dict[str, str]
) -> None:
    await create_price(client, keys, "active_users", unit_amount="0.50")
    await record("berlin", MONTHLY_ACTIVE)
    answer = await costs_by_model(client, billing)
    # 3 users bill 1.50; per model 2 and 2 (u2 used both): 0.75 each, adding up to 1.50.
    assert cost_rows(answer) == [
        ("claude", "2", "0.750000000000"),
        ("gpt-4o", "2", "0.750000000000"),
    ]
    assert answer["total"] == "1.500000000000"
