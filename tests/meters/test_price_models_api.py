"""Prices with volume tiers, flat amounts, free units, packages and minimums through the API:
what is stored and answered, and a 422 naming the field for every impossible combination."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Keys
from tests.meters.test_prices_api import Client, create_price, post_price, setup
from tests.support.problems import assert_problem

TIERS = [
    {"up_to": 1000, "unit_amount": "0.002", "flat_amount": "5"},
    {"up_to": None, "unit_amount": "0.001"},
]


async def test_each_model_is_stored_and_answered(client: Client, keys: Keys) -> None:
    await setup(client, keys)
    graduated = await create_price(
        client,
        keys,
        match={"model": "a"},
        tiers=TIERS,
        free_units="1000",
        minimum_amount=20,
    )
    assert graduated["tiers"] == [
        {"up_to": "1000", "unit_amount": "0.002", "flat_amount": "5.00"},
        {"up_to": None, "unit_amount": "0.001", "flat_amount": "0.00"},
    ]
    assert (graduated["tier_mode"], graduated["free_units"], graduated["minimum_amount"]) == (
        "graduated",
        "1000",
        "20.00",
    )
    volume = await create_price(client, keys, match={"model": "b"}, tiers=TIERS, tier_mode="volume")
    assert volume["tier_mode"] == "volume"
    package = await create_price(
        client,
        keys,
        match={"model": "c"},
        unit_amount="1.25",
        package_size=50,
        free_units=100,
        per_units=1,
    )
    assert (package["package_size"], package["per_units"], package["unit_amount"]) == (
        "50",
        "1",
        "1.25",
    )
    # GET answers the same.
    fetched = await client.get(f"/v1/prices/{graduated['id']}", headers=keys.admin)
    assert fetched.status_code == 200 and fetched.json() == graduated


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        # negative or zero where it cannot be
        ({"free_units": "-1"}, "free_units"),
        ({"package_size": "0"}, "package_size"),
        ({"package_size": "-50"}, "package_size"),
        ({"minimum_amount": "-0.01"}, "minimum_amount"),
        ({"minimum_amount": "NaN"}, "minimum_amount"),
        ({"minimum_amount": "1.001"}, "minimum_amount"),  # below a cent in USD
        ({"tiers": [{"up_to": -5, "unit_amount": "1"}, {"unit_amount": "1"}]}, "tiers[0].up_to"),
        (
            {"tiers": [{"up_to": 5, "unit_amount": "-1"}, {"unit_amount": "1"}]},
            "tiers[0].unit_amount",
        ),
        (
            {"tiers": [{"up_to": 5, "unit_amount": "1"}, {"unit_amount": "1", "flat_amount": -2}]},
            "tiers[1].flat_amount",
        ),
        (
            {"tiers": [{"up_to": 5, "unit_amount": "1"}, {"up_to": 3, "unit_amount": "1"}]},
            "tiers[1].up_to",
        ),
        # combinations that mean nothing
        ({"package_size": 50, "per_units": 1000}, "per_units"),
        ({"package_size": 50, "tiers": TIERS}, "package_size"),
        ({"tier_mode": "volume"}, "tier_mode"),
        ({"tier_mode": "stepped", "tiers": TIERS}, "tier_mode"),
        ({"flat_amount": "5"}, "flat_amount"),  # a flat amount belongs to a tier
    ],
)
async def test_invalid_rules_are_422_naming_the_field(
    client: Client, keys: Keys, fields: dict[str, Any], field: str
) -> None:
    await setup(client, keys)
    response = await post_price(client, keys, **fields)
    assert_problem(response, 422, "validation_error", field)


async def test_relative_prices_take_none_of_the_rules(client: Client, keys: Keys) -> None:
    await setup(client, keys)
    await create_price(client, keys)
    other = {"event_name": "cached", "name": "Cached", "aggregation": "sum", "currency": "USD"}
    assert (await client.post("/v1/meters", json=other, headers=keys.admin)).status_code == 201
    for field, value in (
        ("free_units", "10"),
        ("package_size", "10"),
        ("minimum_amount", "5"),
        ("tier_mode", "volume"),
    ):
        response = await client.post(
            "/v1/prices",
            json={
                "meter": "cached",
                "relative_to": {"meter": "tokens", "factor": "0.5"},
                "effective_from": "2026-01-01T00:00:00Z",
                field: value,
            },
            headers=keys.admin,
        )
        assert_problem(response, 422, "validation_error", field)
