"""Price instants are real, timezone-aware instants in the range the service can bill:
from 2000-01-01T00:00:00Z to 9000-01-01T00:00:00Z. Anything else is a 422 naming the field,
and the database refuses it too, so no stored price can break another tenant's invoices."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.conftest import Keys
from tests.invoices.conftest import create_tenant
from tests.meters.test_prices_api import Client, create_price, post_price, setup
from tests.support.problems import assert_problem

OUT_OF_RANGE = [
    "0001-01-01T00:00:00Z",  # asyncpg would store it as -infinity
    "1999-12-31T23:45:00Z",
    "9000-01-01T00:15:00Z",
    "9999-12-31T23:45:00Z",  # asyncpg would store it as infinity
]


@pytest.mark.parametrize("instant", OUT_OF_RANGE)
async def test_out_of_range_instants_are_422(client: Client, keys: Keys, instant: str) -> None:
    await setup(client, keys)
    for fields, field in [
        ({"effective_from": instant, "match": {"model": "m"}}, "effective_from"),
        ({"effective_to": instant, "match": {"model": "n"}}, "effective_to"),
    ]:
        response = await post_price(client, keys, **fields)
        assert_problem(response, 422, "validation_error", field)
        assert "2000-01-01T00:00:00Z" in response.json()["detail"]
    price = await create_price(client, keys)
    ended = await client.post(
        f"/v1/prices/{price['id']}/end", json={"effective_to": instant}, headers=keys.admin
    )
    assert_problem(ended, 422, "validation_error", "effective_to")
    listed = (await client.get("/v1/prices", headers=keys.admin)).json()["items"]
    assert [p["id"] for p in listed] == [price["id"]]
    assert listed[0]["effective_to"] is None


async def test_the_range_bounds_themselves_are_accepted(client: Client, keys: Keys) -> None:
    await setup(client, keys)
    price = await create_price(
        client,
        keys,
        effective_from="2000-01-01T00:00:00Z",
        effective_to="9000-01-01T00:00:00Z",
    )
    assert price["effective_from"] == "2000-01-01T00:00:00Z"
    assert price["effective_to"] == "9000-01-01T00:00:00Z"


async def test_a_refused_price_leaves_every_tenants_invoicing_working(
    client: Client, keys: Keys
) -> None:
    await setup(client, keys)
    await create_tenant(client, keys, "acme", timezone="Europe/Berlin")
    billing = await keys.make("billing")
    bad = await post_price(
        client, keys, effective_from="0001-01-01T00:00:00Z", match={"model": "gpt-4o"}
    )
    assert_problem(bad, 422, "validation_error", "effective_from")
    # The meter still takes new prices, and invoices still compute.
    price = await create_price(client, keys, match={"model": "gpt-4o"})
    ended = await client.post(
        f"/v1/prices/{price['id']}/end",
        json={"effective_to": "2026-02-01T00:00:00Z"},
        headers=keys.admin,
    )
    assert ended.status_code == 200, ended.text
    preview = await client.get(
        "/v1/tenants/acme/invoices/preview", params={"period": "2026-01"}, headers=billing
    )
    assert preview.status_code == 200, preview.text
    final = await client.post(
        "/v1/tenants/acme/invoices", json={"period": "2026-01"}, headers=billing
    )
    assert final.status_code == 201, final.text


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("effective_from", "-infinity"),
        ("effective_from", "0001-01-01T00:00:00Z"),
        ("effective_to", "infinity"),
        ("effective_to", "9999-12-31T00:00:00Z"),
    ],
)
async def test_the_database_refuses_instants_out_of_range(
    client: Client, keys: Keys, pg_pool: asyncpg.Pool, column: str, value: str
) -> None:
    """Rows written around the API (a script, a restore) cannot hold such instants either."""
    await setup(client, keys)
    meter_id = await pg_pool.fetchval("SELECT id FROM meters WHERE event_name = 'tokens'")
    values: dict[str, Any] = {
        "effective_from": "'2026-01-01T00:00:00Z'",
        "effective_to": "NULL",
        column: f"'{value}'",
    }
    with pytest.raises(asyncpg.CheckViolationError):
        await pg_pool.execute(
            "INSERT INTO prices (id, meter_id, unit_amount, effective_from, effective_to) "
            f"VALUES (gen_random_uuid(), $1, 1, {values['effective_from']}::timestamptz, "
            f"{values['effective_to']}::timestamptz)",
            meter_id,
        )
