"""Recurring charges through the API, and on a golden invoice: seats prorated over October
2026 in Europe/Berlin (745 hours), a platform fee that is not prorated, and ending a charge
inside a finalized month credited on the next invoice."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Keys
from tests.invoices.conftest import Client, create_tenant, finalized, preview
from tests.support.problems import assert_problem

SEAT_CHANGE = "2026-10-15T22:00:00Z"  # October 16, 00:00 in Berlin (summer time)


async def post_charge(client: Client, keys: Keys, tenant: str = "acme", **fields: Any) -> Any:
    body = {"name": "Seats", "unit_amount": "40.00", "effective_from": "2026-09-01T00:00:00Z"}
    body.update(fields)
    return await client.post(f"/v1/tenants/{tenant}/charges", json=body, headers=keys.admin)


async def create_charge(client: Client, keys: Keys, **fields: Any) -> dict[str, Any]:
    response = await post_charge(client, keys, **fields)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def end_charge(client: Client, keys: Keys, charge_id: str, effective_to: str) -> Any:
    return await client.post(
        f"/v1/tenants/acme/charges/{charge_id}/end",
        json={"effective_to": effective_to},
        headers=keys.admin,
    )


async def test_create_list_and_end(client: Client, keys: Keys, billing: dict[str, str]) -> None:
    await create_tenant(client, keys, "acme", currency="EUR", timezone="Europe/Berlin")
    seats = await create_charge(client, keys, quantity=25)
    assert {k: v for k, v in seats.items() if k not in {"id", "created_at"}} == {
        "tenant_id": "acme",
        "name": "Seats",
        "unit_amount": "40.00",
        "quantity": "25",
        "currency": "EUR",  # the tenant's
        "effective_from": "2026-09-01T00:00:00Z",
        "effective_to": None,
        "prorate": True,
    }
    fee = await create_charge(
        client,
        keys,
        name="Platform fee",
        unit_amount="99",
        currency="USD",
        prorate=False,
        effective_from="2026-10-01T00:00:00Z",
    )
    # Listed by effective_from.
    listed = await client.get("/v1/tenants/acme/charges", headers=billing)
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["items"]] == [seats["id"], fee["id"]]
    ended = await end_charge(client, keys, seats["id"], SEAT_CHANGE)
    assert ended.status_code == 200, ended.text
    assert ended.json()["effective_to"] == SEAT_CHANGE
    again = await end_charge(client, keys, seats["id"], SEAT_CHANGE)
    assert again.status_code == 200 and again.json() == ended.json()
    assert_problem(
        await end_charge(client, keys, seats["id"], "2026-08-01T00:00:00Z"),
        422,
        "validation_error",
        "effective_to",
    )
    assert_problem(
        await end_charge(client, keys, "00000000-0000-0000-0000-000000000000", SEAT_CHANGE),
        404,
        "not_found",
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"unit_amount": "-1"}, "unit_amount"),
        ({"quantity": "0"}, "quantity"),
        ({"quantity": "-3"}, "quantity"),
        ({"currency": "XYZ"}, "currency"),
        ({"effective_from": "2026-09-01T00:07:00Z"}, "effective_from"),
        ({"effective_from": "2026-09-01T00:00:00"}, "effective_from"),
        ({"effective_to": "2026-09-01T00:00:00Z"}, "effective_to"),
        ({"name": ""}, "name"),
        ({"seats": 3}, "seats"),
    ],
)
async def test_invalid_charges_are_422_naming_the_field(
    client: Client, keys: Keys, fields: dict[str, Any], field: str
) -> None:
    await create_tenant(client, keys, "acme")
    assert_problem(await post_charge(client, keys, **fields), 422, "validation_error", field)


async def test_an_unknown_tenant_is_404(client: Client, keys: Keys) -> None:
    assert_problem(await post_charge(client, keys, tenant="nobody"), 404, "not_found")


def charge_lines(invoice: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (
            line["kind"],
            line["description"],
            line["quantity"],
            line["unit_amount"],
            line["proration"],
            line["amount"],
            line["period_start"],
            line["period_end"],
        )
        for line in invoice["lines"]
        if line["kind"] == "charge" or line["adjusts_kind"] == "charge"
    ]


async def test_golden_seats_over_a_dst_month(
    client: Client, keys: Keys, billing: dict[str, str]
) -> None:
    await create_tenant(client, keys, "acme", currency="USD", timezone="Europe/Berlin")
    # 25 seats until the change, then 30: an end plus a new charge at that instant.
    seats = await create_charge(client, keys, quantity=25)
    assert (await end_charge(client, keys, seats["id"], SEAT_CHANGE)).status_code == 200
    more = await create_charge(client, keys, quantity=30, effective_from=SEAT_CHANGE)
    await create_charge(
        client,
        keys,
        name="Platform fee",
        unit_amount="99.00",
        prorate=False,
        effective_from="2026-10-20T00:00:00Z",
    )
    october = ("2026-09-30T22:00:00Z", "2026-10-31T23:00:00Z")  # 745 hours
    expected = [
        # 25 x 40.00 x 360 / 745 = 483.2214... (a 744-hour month would say 483.87)
        (
            "charge",
            "Seats — 25 at 40.00",
            "25",
            "40.00",
            "0.4832214765",
            "483.22",
            october[0],
            SEAT_CHANGE,
        ),
        # 30 x 40.00 x 385 / 745 = 620.1342... (the 25-hour day included)
        (
            "charge",
            "Seats — 30 at 40.00",
            "30",
            "40.00",
            "0.5167785235",
            "620.13",
            SEAT_CHANGE,
            october[1],
        ),
        ("charge", "Platform fee", "1", "99.00", "1", "99.00", "2026-10-20T00:00:00Z", october[1]),
    ]
    [draft] = await preview(client, billing, "acme", "2026-10")
    assert charge_lines(draft) == expected
    assert draft["total"] == "1202.35"
    [invoice] = await finalized(client, billing, "acme", "2026-10")
    assert charge_lines(invoice) == expected
    assert all(line["meter"] is None for line in invoice["lines"])

    # The 30 seats end on October 26 (Berlin, after the clocks went back), after October was
    # finalized: 241 of 745 hours, 388.19 instead of 620.13, credited on November's invoice.
    ended = await end_charge(client, keys, more["id"], "2026-10-25T23:00:00Z")
    assert ended.status_code == 200, ended.text
    [november] = await finalized(client, billing, "acme", "2026-11")
    assert charge_lines(november) == [
        ("charge", "Platform fee", "1", "99.00", "1", "99.00", october[1], "2026-11-30T23:00:00Z"),
        (
            "adjustment",
            "Adjustment for 2026-10: Seats — 30 at 40.00",
            "0",
            "40.00",
            None,
            "-231.94",
            SEAT_CHANGE,
            "2026-10-25T23:00:00Z",  # what the charge covers in October now
        ),
    ]
    assert november["total"] == "-132.94"
