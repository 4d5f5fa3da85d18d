"""Golden invoice for finance's charge models, every line worked out by hand.

Tenant `initech` (UTC) in October 2026, all in USD:

- requests: 1,000 free, then graduated tiers with a flat fee each: up to 10,000 at 0.002
  (+5.00), up to 50,000 at 0.001 (+10.00), then 0.0005;
- storage: volume tiers per region: up to 100 GB at 0.10, up to 1,000 at 0.08 (+2.00), then
  0.05 (+5.00);
- messages: 100 free, then packages of 50 at 1.25;
- GPU minutes: the first 60 free (a 0.00 tier), then 0.10, with a 20.00 monthly minimum;
- support: a 50.00 minimum but no usage, so nothing at all.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Keys
from tests.invoices.conftest import (
    Client,
    Record,
    Usage,
    brief,
    create_meter,
    create_price,
    create_tenant,
    finalized,
    preview,
)

OCT = ("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")


async def build_catalog(client: Client, keys: Keys) -> None:
    await create_tenant(client, keys, "initech", timezone="UTC")
    await create_meter(client, keys, "requests", "Requests", "sum", unit="requests")
    await create_meter(
        client, keys, "storage_gb", "Storage", "sum", unit="GB", dimensions=["region"]
    )
    await create_meter(client, keys, "messages", "Messages", "sum", unit="messages")
    await create_meter(client, keys, "gpu_minutes", "GPU minutes", "sum", unit="minutes")
    await create_meter(client, keys, "support", "Support", "count")
    await create_price(
        client,
        keys,
        "requests",
        free_units="1000",
        tiers=[
            {"up_to": 10_000, "unit_amount": "0.002", "flat_amount": "5.00"},
            {"up_to": 50_000, "unit_amount": "0.001", "flat_amount": "10.00"},
            {"up_to": None, "unit_amount": "0.0005"},
        ],
    )
    for region in ("eu", "us"):
        await create_price(
            client,
            keys,
            "storage_gb",
            match={"region": region},
            tier_mode="volume",
            tiers=[
                {"up_to": 100, "unit_amount": "0.10"},
                {"up_to": 1000, "unit_amount": "0.08", "flat_amount": "2.00"},
                {"up_to": None, "unit_amount": "0.05", "flat_amount": "5.00"},
            ],
        )
    await create_price(
        client, keys, "messages", unit_amount="1.25", package_size=50, free_units=100
    )
    await create_price(
        client,
        keys,
        "gpu_minutes",
        minimum_amount="20.00",
        tiers=[{"up_to": 60, "unit_amount": "0"}, {"up_to": None, "unit_amount": "0.10"}],
    )
    await create_price(client, keys, "support", unit_amount="5.00", minimum_amount="50.00")


USAGE = [
    # 25,503 requests
    Usage("requests", "2026-10-02T10:00:00+00:00", 12_000),
    Usage("requests", "2026-10-20T10:00:00+00:00", 13_503),
    # storage: exactly 100 GB in eu (up_to is inclusive: tier 1), 250.5 GB in us (tier 2)
    Usage("storage_gb", "2026-10-03T00:00:00+00:00", 60, dimensions={"region": "eu"}),
    Usage("storage_gb", "2026-10-04T00:00:00+00:00", 40, dimensions={"region": "eu"}),
    Usage("storage_gb", "2026-10-05T00:00:00+00:00", "250.5", dimensions={"region": "us"}),
    # 237 messages
    Usage("messages", "2026-10-06T00:00:00+00:00", 200),
    Usage("messages", "2026-10-31T23:59:59+00:00", 37),
    # 150 GPU minutes
    Usage("gpu_minutes", "2026-10-07T00:00:00+00:00", 150),
    # November: not October's
    Usage("requests", "2026-11-01T00:00:00+00:00", 1_000_000),
]

EXPECTED = [
    # 150 - 60 = 90 x 0.10 = 9.00, topped up to the 20.00 minimum by 11.00
    ("gpu_minutes", "GPU minutes — graduated tiers", {}, "150", "0.10", "1", "9.00", 2),
    ("gpu_minutes", "Minimum for GPU minutes", {}, "1", "11.00", "1", "11.00", None),
    # 237 - 100 free = 137, rounded up to 3 packages of 50: 3 x 1.25
    (
        "messages",
        "Messages — 100 messages free — packages of 50 messages",
        {},
        "237",
        "1.25",
        "1",
        "3.75",
        None,
    ),
    # 25,503 - 1,000 free = 24,503: 10,000 x 0.002 + 5.00 = 25.00, 14,503 x 0.001 + 10.00 =
    # 24.503; 49.503 rounded once to 49.50
    (
        "requests",
        "Requests — graduated tiers — 1000 requests free",
        {},
        "25503",
        "0.001",
        "1",
        "49.50",
        2,
    ),
    # 100 GB: tier 1 (inclusive), 100 x 0.10
    (
        "storage_gb",
        "Storage — region=eu — volume tiers",
        {"region": "eu"},
        "100",
        "0.10",
        "1",
        "10.00",
        1,
    ),
    # 250.5 GB: every GB at tier 2, 250.5 x 0.08 = 20.04, + 2.00
    (
        "storage_gb",
        "Storage — region=us — volume tiers",
        {"region": "us"},
        "250.5",
        "0.08",
        "1",
        "22.04",
        2,
    ),
]
# 9.00 + 11.00 + 3.75 + 49.50 + 10.00 + 22.04
TOTAL = "105.29"


@pytest.fixture
async def initech(client: Client, keys: Keys, record: Record) -> None:
    await build_catalog(client, keys)
    assert await record("initech", USAGE) == len(USAGE)


def shown(line: dict[str, Any]) -> tuple[Any, ...]:
    meter, description, match, quantity, unit, per_units, amount, tier, *_ = brief(line)
    return (meter, description, match, quantity, unit, per_units, amount, tier)


def assert_golden(invoice: dict[str, Any]) -> None:
    lines = invoice["lines"]
    assert [shown(line) for line in lines] == EXPECTED
    assert (invoice["subtotal"], invoice["total"]) == (TOTAL, TOTAL)
    assert [line["kind"] for line in lines] == [
        "usage",
        "minimum",
        "usage",
        "usage",
        "usage",
        "usage",
    ]
    gpu, minimum, messages, requests, eu, us = lines
    assert [(t["tier"], t["quantity"], t["amount"]) for t in gpu["tiers"]] == [
        (1, "60", "0.00"),
        (2, "90", "9.00"),
    ]
    assert (minimum["minimum_amount"], minimum["price_id"]) == ("20.00", gpu["price_id"])
    assert (minimum["period_start"], minimum["period_end"]) == OCT
    assert (messages["free_units_applied"], messages["packages"], messages["tiers"]) == (
        "100",
        "3",
        [],
    )
    assert requests["free_units_applied"] == "1000"
    assert requests["tiers"] == [
        {
            "tier": 1,
            "up_to": "10000",
            "quantity": "10000",
            "unit_amount": "0.002",
            "flat_amount": "5.00",
            "amount": "25.00",
        },
        {
            "tier": 2,
            "up_to": "50000",
            "quantity": "14503",
            "unit_amount": "0.001",
            "flat_amount": "10.00",
            "amount": "24.503",  # exact: the line is what is rounded
        },
    ]
    assert [(t["tier"], t["quantity"], t["flat_amount"]) for t in eu["tiers"]] == [
        (1, "100", "0.00")
    ]
    assert [(t["tier"], t["quantity"], t["flat_amount"], t["amount"]) for t in us["tiers"]] == [
        (2, "250.5", "2.00", "22.04")
    ]
    for line in lines:
        assert line["packages"] is None or line is messages
        assert line["adjusts_period"] is None and line["adjusts_kind"] is None


@pytest.mark.usefixtures("initech")
async def test_preview_and_finalize_the_golden_invoice(
    client: Client, billing: dict[str, str]
) -> None:
    [draft] = await preview(client, billing, "initech", "2026-10")
    assert_golden(draft)
    [invoice] = await finalized(client, billing, "initech", "2026-10")
    assert_golden(invoice)
    csv = await client.get(
        f"/v1/invoices/{invoice['id']}", headers={**billing, "Accept": "text/csv"}
    )
    assert csv.status_code == 200
    header, *rows = csv.text.splitlines()
    assert "kind" in header.split(",") and "packages" in header.split(",")
    assert len(rows) == len(EXPECTED) + 2  # lines, subtotal, total


@pytest.mark.usefixtures("initech")
async def test_late_usage_moves_money_from_the_minimum_to_usage(
    client: Client, billing: dict[str, str], record: Record
) -> None:
    await finalized(client, billing, "initech", "2026-10")
    # 100 more GPU minutes arrive late for October: usage 19.00, the minimum only 1.00 now.
    await record("initech", [Usage("gpu_minutes", "2026-10-30T00:00:00+00:00", 100)])
    [november] = await finalized(client, billing, "initech", "2026-11")
    adjustments = [line for line in november["lines"] if line["adjusts_period"] == "2026-10"]
    assert [
        (line["kind"], line["adjusts_kind"], line["quantity"], line["amount"])
        for line in adjustments
    ] == [
        ("adjustment", "usage", "100", "10.00"),
        ("adjustment", "minimum", "0", "-10.00"),
    ]
    assert [(t["tier"], t["quantity"], t["amount"]) for t in adjustments[0]["tiers"]] == [
        (2, "100", "10.00")
    ]
