"""A tenant's time zone is an IANA zone name: not every file zoneinfo would load."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.common.timezones import IANA_ZONES
from tests.conftest import Keys
from tests.support.problems import assert_problem

Client = AsyncTestClient[Litestar]
NOT_ZONES = ["localtime", "Factory", "posixrules", "right/UTC", "posix/UTC", "Mars/Base", "A" * 64]


def test_the_zone_list_holds_iana_names_only() -> None:
    assert {"UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"} <= IANA_ZONES
    assert not IANA_ZONES & set(NOT_ZONES)
    assert not any(name.startswith(("posix/", "right/")) for name in IANA_ZONES)


@pytest.mark.parametrize("zone", NOT_ZONES)
async def test_a_tenant_cannot_get_a_zone_outside_iana(
    client: Client, keys: Keys, zone: str
) -> None:
    created = await client.post(
        "/v1/tenants", json={"id": "acme", "name": "Acme", "timezone": zone}, headers=keys.admin
    )
    assert_problem(created, 422, "validation_error", "timezone")
    assert (
        await client.post("/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=keys.admin)
    ).status_code == 201
    updated = await client.patch("/v1/tenants/acme", json={"timezone": zone}, headers=keys.admin)
    assert_problem(updated, 422, "validation_error", "timezone")


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires"])
async def test_iana_zones_are_accepted(client: Client, keys: Keys, zone: str) -> None:
    body = {"id": "acme", "name": "Acme", "timezone": zone}
    created = await client.post("/v1/tenants", json=body, headers=keys.admin)
    assert created.status_code == 201, created.text
    assert created.json()["timezone"] == zone
