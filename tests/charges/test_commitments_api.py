"""Commitments through the API, and a golden true-up: October's spend (usage and a platform
fee) brought up to a 500.00 commitment, then late usage moving money from the true-up to
usage on November's invoice."""

from __future__ import annotations

from typing import Any

import pytest

from tests.charges.test_charges_api import create_charge
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
from tests.support.problems import assert_problem

OCT = "2026-10-01T00:00:00Z"


async def post_commitment(client: Client, keys: Keys, **fields: Any) -> Any:
    body = {"amount": "500.00", "effective_from": OCT, **fields}
    return await client.post("/v1/tenants/acme/commitments", json=body, headers=keys.admin)


async def test_create_list_end_and_overlap(
    client: Client, keys: Keys, billing: dict[str, str]
) -> None:
    await create_tenant(client, keys, "acme", currency="EUR")
    created = await post_commitment(client, keys, effective_to="2027-01-01T00:00:00Z")
    assert created.status_code == 201, created.text
    commitment = created.json()
    assert (commitment["amount"], commitment["currency"], commitment["effective_to"]) == (
        "500.00",
        "EUR",
        "2027-01-01T00:00:00Z",
    )
    # Another EUR commitment in that time overlaps; one in USD does not.
    assert_problem(
        await post_commitment(client, keys, effective_from="2026-12-01T00:00:00Z"),
        409,
        "commitment_overlap",
    )
    usd = await post_commitment(client, keys, currency="USD")
    assert usd.status_code == 201, usd.text
    ended = await client.post(
        f"/v1/tenants/acme/commitments/{commitment['id']}/end",
        json={"effective_to": "2026-12-01T00:00:00Z"},
        headers=keys.admin,
    )
    assert ended.status_code == 200, ended.text
    later = await post_commitment(client, keys, effective_from="2026-12-01T00:00:00Z")
    assert later.status_code == 201, later.text
    listed = await client.get("/v1/tenants/acme/commitments", headers=billing)
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == 3
    # Moving the end back over the next one overlaps it.
    assert_problem(
        await client.post(
            f"/v1/tenants/acme/commitments/{commitment['id']}/end",
            json={"effective_to": "2027-01-01T00:00:00Z"},
            headers=keys.admin,
        ),
        409,
        "commitment_overlap",
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"amount": "0"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"amount": "10.001"}, "amount"),  # below a cent
        ({"currency": "ABC"}, "currency"),
        ({"effective_from": "2026-10-01T00:05:00Z"}, "effective_from"),
        ({"effective_to": OCT}, "effective_to"),
    ],
)
async def test_invalid_commitments_are_422_naming_the_field(
    client: Client, keys: Keys, fields: dict[str, Any], field: str
) -> None:
    await create_tenant(client, keys, "acme", currency="USD")
    assert_problem(await post_commitment(client, keys, **fields), 422, "validation_error", field)


def kinds(invoice: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (line["kind"], line["adjusts_kind"], line["adjusts_period"], line["amount"])
        for line in invoice["lines"]
    ]


async def test_golden_commitment_true_up(
    client: Client, keys: Keys, billing: dict[str, str], record: Record
) -> None:
    await create_tenant(client, keys, "acme", currency="USD", timezone="UTC")
    await create_meter(client, keys, "tokens", "Tokens", "sum")
    await create_price(client, keys, "tokens", unit_amount="2.00")
    await create_charge(client, keys, name="Platform fee", unit_amount="100.00", effective_from=OCT)
    assert (await post_commitment(client, keys)).status_code == 201
    await record("acme", [Usage("tokens", "2026-10-10T00:00:00+00:00", 60)])
    # October: 60 x 2.00 = 120.00 + 100.00 fee = 220.00, brought up to 500.00 by 280.00.
    expected = [
        ("usage", None, None, "120.00"),
        ("charge", None, None, "100.00"),
        ("commitment", None, None, "280.00"),
    ]
    [draft] = await preview(client, billing, "acme", "2026-10")
    assert kinds(draft) == expected and draft["total"] == "500.00"
    [october] = await finalized(client, billing, "acme", "2026-10")
    assert kinds(october) == expected
    true_up = october["lines"][2]
    assert (true_up["minimum_amount"], true_up["proration"], true_up["meter"]) == (
        "500.00",
        "1",
        None,
    )
    assert true_up["description"] == "Commitment: minimum spend of 500.00"

    # 50 more October tokens arrive late: 100.00 more usage, 100.00 less true-up. November
    # has no usage: the fee and a 400.00 true-up.
    await record("acme", [Usage("tokens", "2026-10-30T00:00:00+00:00", 50)])
    [november] = await finalized(client, billing, "acme", "2026-11")
    assert kinds(november) == [
        ("charge", None, None, "100.00"),
        ("commitment", None, None, "400.00"),
        ("adjustment", "usage", "2026-10", "100.00"),
        ("adjustment", "commitment", "2026-10", "-100.00"),
    ]
    assert november["total"] == "500.00"
