from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.meters.errors import PriceOverlap
from service.meters.pricing import resolve_price
from service.meters.schemas import PriceCreate
from service.meters.service import PriceService, next_price_boundary
from tests.conftest import Keys
from tests.support.pagination import walk_pages
from tests.support.problems import assert_problem

Client = AsyncTestClient[Litestar]
JAN = "2026-01-01T00:00:00Z"
FEB = "2026-02-01T00:00:00Z"
MAR = "2026-03-01T00:00:00Z"


async def setup(client: Client, keys: Keys, *tenants: str, **meter: Any) -> None:
    body = {
        "event_name": "tokens",
        "name": "Tokens",
        "unit": "tokens",
        "aggregation": "sum",
        "currency": "USD",
        "dimensions": ["region"],
        **meter,
    }
    response = await client.post("/v1/meters", json=body, headers=keys.admin)
    assert response.status_code == 201, response.text
    for tenant in tenants:
        response = await client.post(
            "/v1/tenants", json={"id": tenant, "name": tenant}, headers=keys.admin
        )
        assert response.status_code == 201, response.text


async def post_price(client: Client, keys: Keys, **fields: Any) -> Any:
    body = {"meter": "tokens", "unit_amount": "1.00", "effective_from": JAN, **fields}
    return await client.post("/v1/prices", json=body, headers=keys.admin)


async def create_price(client: Client, keys: Keys, **fields: Any) -> dict[str, Any]:
    response = await post_price(client, keys, **fields)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


# Pure helpers ----------------------------------------------------------------------------


def test_next_price_boundary_rounds_up_to_15_minutes() -> None:
    at = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert next_price_boundary(at) == at
    assert next_price_boundary(at + timedelta(microseconds=1)) == at + timedelta(minutes=15)
    assert next_price_boundary(at + timedelta(minutes=14, seconds=59)) == at + timedelta(minutes=15)
    assert next_price_boundary(datetime(2026, 12, 31, 23, 50, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


# Creating prices --------------------------------------------------------------------------


async def test_create_and_get_a_price(client: Client, keys: Keys) -> None:
    await setup(client, keys)
    created = await create_price(
        client,
        keys,
        unit_amount="2.5",
        per_units=1000000,
        match={"model": "gpt-4o", "region": "eu"},
        effective_to=FEB,
    )
    assert created["meter"] == "tokens"
    assert created["currency"] == "USD"
    assert created["unit_amount"] == "2.50"
    assert created["per_units"] == "1000000"
    assert created["match"] == {"model": "gpt-4o", "region": "eu"}
    assert created["tenant_id"] is None
    assert created["tiers"] == []
    assert created["effective_from"] == JAN
    assert created["effective_to"] == FEB
    got = await client.get(f"/v1/prices/{created['id']}", headers=keys.admin)
    assert got.status_code == 200
    assert got.json() == created
    billing = await keys.make("billing")
    assert (await client.get(f"/v1/prices/{created['id']}", headers=billing)).json() == created


async def test_amounts_are_exact_and_accept_strings_or_numbers(client: Client, keys: Keys) -> None:
    await setup(client, keys)
    cases = [
        ("2.50", "2.50"),
        (2.5, "2.50"),
        (10, "10.00"),
        ("0.000000000001", "0.000000000001"),
        ("1.100000000000000", "1.10"),  # trailing zeros beyond 12 places are fine
        ("1e-6", "0.000001"),
        ("12345678901234567890.123456789012", "12345678901234567890.123456789012"),
        ("0", "0.00"),
    ]
    for index, (sent, shown) in enumerate(cases):
        created = await create_price(
            client, keys, unit_amount=sent, match={"model": f"m{index}"}, per_units="0.5"
        )
        assert created["unit_amount"] == shown, (sent, created)
        assert created["per_units"] == "0.5"


async def test_amounts_render_in_the_meter_currency(client: Client, keys: Keys) -> None:
    await setup(client, keys, event_name="yen", currency="JPY")
    created = await create_price(client, keys, meter="yen", unit_amount="3")
    assert (created["currency"], created["unit_amount"]) == ("JPY", "3")


async def test_invalid_amounts_are_422(client: Client, keys: Keys) -> None:
    await setup(client, keys)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"unit_amount": "0.0000000000001"}, "unit_amount"),  # 13 decimal places
        ({"unit_amount": 0.1234567890123}, "unit_amount"),
        ({"unit_amount": "-1"}, "unit_amount"),
        ({"unit_amount": "NaN"}, "unit_amount"),
        ({"unit_amount": "Infinity"}, "unit_amount"),
        ({"unit_amount": "two"}, "unit_amount"),
        ({"unit_amount": "1e20"}, "unit_amount"),
        ({"unit_amount": None}, "unit_amount"),
        ({"per_units": 0}, "per_units"),
        ({"per_units": "-5"}, "per_units"),
        ({"per_units": "0.0000000000001"}, "per_units"),
    ]
    for fields, field in cases:
        assert_problem(await post_price(client, keys, **fields), 422, "validation_error", field)
    no_amount = await client.post(
        "/v1/prices", json={"meter": "tokens", "effective_from": JAN}, headers=keys.admin
    )
    assert_problem(no_amount, 422, "validation_error", "unit_amount")
    assert (await client.get("/v1/prices", headers=keys.admin)).json()["items"] == []


async def test_price_references_are_checked(client: Client, keys: Keys) -> None:
    await setup(client, keys, "acme")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"meter": "nope"}, "meter"),
        ({"tenant_id": "ghost"}, "tenant_id"),
        ({"match": {"colour": "red"}}, "match"),  # not declared by the meter
        ({"match": {"tenant_id": "acme"}}, "match"),
        ({"match": {"model": 4}}, "match"),
        ({"match": {"model": ""}}, "match"),
        ({"surprise": 1}, "surprise"),
    ]
    for fields, field in cases:
        assert_problem(await post_price(client, keys, **fields), 422, "validation_error", field)
    # Every attribution field and declared dimension may be matched (sizes differ, else the
    # prices would tie for usage carrying all of them).
    for match in (
        {"region": "eu"},
        {"org_id": "o", "api_key_id": "k"},
        {"project_id": "p", "user_id": "u", "model": "m"},
    ):
        await create_price(client, keys, match=match)


async def test_effective_times_must_be_on_15_minute_boundaries(client: Client, keys: Keys) -> None:
    await setup(client, keys)
    cases = [
        ({"effective_from": "2026-01-01T00:10:00Z"}, "effective_from"),
        ({"effective_from": "2026-01-01T00:15:01Z"}, "effective_from"),
        ({"effective_from": "2026-01-01T00:15:00.5Z"}, "effective_from"),
        ({"effective_from": "2026-01-01T00:00:00"}, "effective_from"),  # no offset
        ({"effective_from": "yesterday"}, "effective_from"),
        ({"effective_to": "2026-02-01T00:05:00Z"}, "effective_to"),
        ({"effective_to": JAN}, "effective_to"),  # not after effective_from
        ({"effective_from": FEB, "effective_to": JAN}, "effective_to"),
    ]
    for fields, field in cases:
        response = await post_price(client, keys, **fields)
        assert_problem(response, 422, "validation_error", field)
    off = await post_price(client, keys, effective_from="2026-01-01T00:10:00Z")
    assert "15-minute" in off.json()["detail"]
    assert "2026-01-01T00:00:00Z" in off.json()["detail"]  # suggests the boundaries around it
    assert "2026-01-01T00:15:00Z" in off.json()["detail"]
    # A boundary in another offset is a UTC boundary too.
    shifted = await create_price(client, keys, effective_from="2026-01-01T05:30:00+05:30")
    assert shifted["effective_from"] == JAN


async def test_effective_from_defaults_to_the_next_boundary(client: Client, keys: Keys) -> None:
    await setup(client, keys)
    before = datetime.now(UTC)
    created = await client.post(
        "/v1/prices", json={"meter": "tokens", "unit_amount": "1"}, headers=keys.admin
    )
    assert created.status_code == 201, created.text
    start = datetime.fromisoformat(created.json()["effective_from"])
    assert start.minute % 15 == 0 and start.second == 0 and start.microsecond == 0
    assert before - timedelta(seconds=1) <= start < before + timedelta(minutes=15, seconds=1)
    assert created.json()["effective_to"] is None


async def test_graduated_tiers(client: Client, keys: Keys) -> None:
    await setup(client, keys)
    tiers = [
        {"up_to": 1000000, "unit_amount": "2.50"},
        {"up_to": "10000000", "unit_amount": "2"},
        {"up_to": None, "unit_amount": "1.5"},
    ]
    created = await create_price(client, keys, per_units="1000000", tiers=tiers)
    assert created["tiers"] == [
        {"up_to": "1000000", "unit_amount": "2.50", "flat_amount": "0.00"},
        {"up_to": "10000000", "unit_amount": "2.00", "flat_amount": "0.00"},
        {"up_to": None, "unit_amount": "1.50", "flat_amount": "0.00"},
    ]
    assert (created["tier_mode"], created["free_units"]) == ("graduated", "0")
    assert (created["package_size"], created["minimum_amount"]) == (None, None)
    # unit_amount may be left out when tiers are given.
    no_amount = await client.post(
        "/v1/prices",
        json={
            "meter": "tokens",
            "effective_from": JAN,
            "match": {"model": "x"},
            "tiers": [{"up_to": 10, "unit_amount": "1"}, {"unit_amount": "0.5"}],
        },
        headers=keys.admin,
    )
    assert no_amount.status_code == 201, no_amount.text
    assert no_amount.json()["tiers"][1] == {
        "up_to": None,
        "unit_amount": "0.50",
        "flat_amount": "0.00",
    }

    bad_tiers = [
        [{"up_to": 10, "unit_amount": "1"}],  # last tier not open-ended
        [{"up_to": None, "unit_amount": "1"}, {"up_to": 10, "unit_amount": "1"}],
        [{"up_to": 10, "unit_amount": "1"}, {"up_to": 5, "unit_amount": "1"}, {"unit_amount": 1}],
        [{"up_to": 0, "unit_amount": "1"}, {"unit_amount": "1"}],
        [{"up_to": 10, "unit_amount": "-1"}, {"unit_amount": "1"}],
        [{"up_to": 10, "unit_amount": "0.0000000000001"}, {"unit_amount": "1"}],
        [{"up_to": 10, "unit_amount": "1", "flat": 3}, {"unit_amount": "1"}],
    ]
    for index, bad in enumerate(bad_tiers):
        response = await post_price(client, keys, tiers=bad, match={"model": f"bad{index}"})
        assert_problem(response, 422, "validation_error", "tiers")


# The overlap rule -------------------------------------------------------------------------


async def test_overlapping_prices_are_409(client: Client, keys: Keys) -> None:
    await setup(client, keys, "acme")
    first = await create_price(client, keys, match={"model": "gpt-4o"}, effective_to=MAR)
    for fields in (
        {"match": {"model": "gpt-4o"}},  # open-ended, starts inside
        {"match": {"model": "gpt-4o"}, "effective_from": FEB, "effective_to": MAR},
        {
            "match": {"model": "gpt-4o"},
            "effective_from": "2025-12-01T00:00:00Z",
            "effective_to": "2026-01-01T00:15:00Z",
        },
        {"match": {"region": "eu"}},  # equally specific: usage with both would tie
    ):
        response = await post_price(client, keys, **fields)
        assert_problem(response, 409, "price_overlap")
        assert first["id"] in response.json()["detail"]

    # Not overlapping: adjacent in time, another match, more specific, or a tenant override.
    await create_price(client, keys, match={"model": "gpt-4o"}, effective_from=MAR)
    await create_price(
        client,
        keys,
        match={"model": "gpt-4o"},
        effective_from="2025-12-01T00:00:00Z",
        effective_to=JAN,
    )
    await create_price(client, keys, match={"model": "gpt-4o-mini"})
    await create_price(client, keys, match={"model": "gpt-4o", "region": "eu"})
    await create_price(client, keys, match={})
    await create_price(client, keys, match={"model": "gpt-4o"}, tenant_id="acme")
    response = await post_price(client, keys, match={"model": "gpt-4o"}, tenant_id="acme")
    assert_problem(response, 409, "price_overlap")


async def test_concurrent_identical_prices_store_exactly_one(
    client: Client, keys: Keys, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Each request runs in its own transaction on its own connection, as under many
    replicas; the overlap check must still let exactly one of them through."""
    await setup(client, keys)
    body = PriceCreate(
        meter="tokens",
        unit_amount=Decimal("2.50"),
        match={"model": "gpt-4o"},
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
    )

    requests = 8
    all_connected = asyncio.Barrier(requests)

    async def one_request() -> str:
        async with sessionmaker() as session:
            try:
                async with session.begin():
                    # Every transaction reads the meter's prices (and so has its connection
                    # ready) before any of them creates one.
                    assert await PriceService(session).rules_for("tokens", None) == []
                    await all_connected.wait()
                    await PriceService(session).create(body)
            except PriceOverlap:
                return "overlap"
            return "created"

    outcomes = await asyncio.gather(*(one_request() for _ in range(requests)))
    assert sorted(outcomes) == ["created"] + ["overlap"] * (requests - 1)
    listed = (await client.get("/v1/prices", headers=keys.admin)).json()["items"]
    assert len(listed) == 1


async def test_end_a_price_then_replace_it(client: Client, keys: Keys) -> None:
    await setup(client, keys)
    old = await create_price(client, keys, unit_amount="3.00", match={"model": "gpt-4o"})
    blocked = await post_price(
        client, keys, unit_amount="2.50", match={"model": "gpt-4o"}, effective_from=MAR
    )
    assert_problem(blocked, 409, "price_overlap")

    ended = await client.post(
        f"/v1/prices/{old['id']}/end", json={"effective_to": MAR}, headers=keys.admin
    )
    assert ended.status_code == 200, ended.text
    assert ended.json()["effective_to"] == MAR
    again = await client.post(
        f"/v1/prices/{old['id']}/end", json={"effective_to": MAR}, headers=keys.admin
    )
    assert again.status_code == 200
    assert again.json() == ended.json()
    new = await create_price(
        client, keys, unit_amount="2.50", match={"model": "gpt-4o"}, effective_from=MAR
    )

    # Moving the end past the successor's start would overlap it.
    extend = await client.post(
        f"/v1/prices/{old['id']}/end",
        json={"effective_to": "2026-03-01T00:15:00Z"},
        headers=keys.admin,
    )
    assert_problem(extend, 409, "price_overlap")
    assert new["id"] in extend.json()["detail"]
    shorten = await client.post(
        f"/v1/prices/{old['id']}/end", json={"effective_to": FEB}, headers=keys.admin
    )
    assert shorten.status_code == 200
    assert shorten.json()["effective_to"] == FEB

    for body, field in (
        ({"effective_to": JAN}, "effective_to"),  # not after effective_from
        ({"effective_to": "2025-12-01T00:00:00Z"}, "effective_to"),
        ({"effective_to": "2026-02-01T00:01:00Z"}, "effective_to"),
        ({}, "effective_to"),
    ):
        response = await client.post(f"/v1/prices/{old['id']}/end", json=body, headers=keys.admin)
        assert_problem(response, 422, "validation_error", field)
    missing = await client.post(
        "/v1/prices/00000000-0000-0000-0000-000000000000/end",
        json={"effective_to": MAR},
        headers=keys.admin,
    )
    assert_problem(missing, 404, "not_found")


# Reading prices ---------------------------------------------------------------------------


async def test_price_list_is_paginated_and_filtered(client: Client, keys: Keys) -> None:
    await setup(client, keys, "acme", "other")
    await setup(client, keys, event_name="calls", aggregation="count", dimensions=[])
    ids = []
    for index in range(5):
        ids.append((await create_price(client, keys, match={"model": f"m{index}"}))["id"])
    acme = await create_price(client, keys, tenant_id="acme")
    other = await create_price(client, keys, tenant_id="other")
    calls = await create_price(client, keys, meter="calls")

    async def walk(**query: Any) -> list[str]:
        return await walk_pages(client, "/v1/prices", keys.admin, "id", **query)

    assert await walk() == [*ids, acme["id"], other["id"], calls["id"]]
    assert await walk(meter="tokens") == [*ids, acme["id"], other["id"]]
    assert await walk(meter="calls") == [calls["id"]]
    assert await walk(meter="nope") == []
    assert await walk(tenant_id="acme") == [acme["id"]]
    assert await walk(meter="calls", tenant_id="acme") == []
    bad = await client.get("/v1/prices", params={"cursor": "garbage!"}, headers=keys.admin)
    assert_problem(bad, 422, "validation_error")
    assert_problem(
        await client.get("/v1/prices/00000000-0000-0000-0000-000000000000", headers=keys.admin),
        404,
        "not_found",
    )


async def test_a_tenant_bound_billing_key_sees_no_other_tenants_contract(
    client: Client, keys: Keys
) -> None:
    await setup(client, keys, "acme", "other")
    listed = await create_price(client, keys)
    acme = await create_price(client, keys, tenant_id="acme")
    other = await create_price(client, keys, tenant_id="other")
    bound = await keys.make("billing", tenant_id="acme")
    items = (await client.get("/v1/prices", headers=bound)).json()["items"]
    assert [p["id"] for p in items] == [listed["id"], acme["id"]]
    mine = (await client.get("/v1/prices", params={"tenant_id": "acme"}, headers=bound)).json()
    assert [p["id"] for p in mine["items"]] == [acme["id"]]
    theirs = await client.get("/v1/prices", params={"tenant_id": "other"}, headers=bound)
    assert_problem(theirs, 403, "forbidden")
    assert (await client.get(f"/v1/prices/{acme['id']}", headers=bound)).status_code == 200
    assert_problem(await client.get(f"/v1/prices/{other['id']}", headers=bound), 403, "forbidden")
    for scope in ("read", "ingest"):
        headers = await keys.make(scope)
        assert_problem(await client.get("/v1/prices", headers=headers), 403, "forbidden")


# The LLM case: per-model token prices ------------------------------------------------------

LLM_METERS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")
LIST_PRICES = {
    "gpt-4o": {
        "input_tokens": "2.50",
        "output_tokens": "10.00",
        "cache_write_tokens": "3.75",
        "cache_read_tokens": "1.25",
    },
    "claude-sonnet": {
        "input_tokens": "3.00",
        "output_tokens": "15.00",
        "cache_write_tokens": "3.75",
        "cache_read_tokens": "0.30",
    },
}


async def test_llm_per_model_prices_with_a_tenant_contract(
    client: Client, keys: Keys, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    for tenant in ("acme", "globex"):
        response = await client.post(
            "/v1/tenants", json={"id": tenant, "name": tenant}, headers=keys.admin
        )
        assert response.status_code == 201
    for event_name in LLM_METERS:
        response = await client.post(
            "/v1/meters",
            json={
                "event_name": event_name,
                "name": event_name.replace("_", " ").capitalize(),
                "unit": "tokens",
                "aggregation": "sum",
                "currency": "USD",
            },
            headers=keys.admin,
        )
        assert response.status_code == 201, response.text
    for model, prices in LIST_PRICES.items():
        for event_name, amount in prices.items():
            await create_price(
                client,
                keys,
                meter=event_name,
                unit_amount=amount,
                per_units="1000000",
                match={"model": model},
            )
    # Acme negotiated 20% off gpt-4o input tokens, from February on.
    contract = await create_price(
        client,
        keys,
        meter="input_tokens",
        unit_amount="2.00",
        per_units="1000000",
        match={"model": "gpt-4o"},
        tenant_id="acme",
        effective_from=FEB,
    )

    response = await client.get(
        "/v1/prices", params={"meter": "input_tokens", "tenant_id": "acme"}, headers=keys.admin
    )
    assert [
        (p["id"], p["unit_amount"], p["per_units"], p["match"], p["currency"])
        for p in response.json()["items"]
    ] == [(contract["id"], "2.00", "1000000", {"model": "gpt-4o"}, "USD")]
    all_input = (
        await client.get("/v1/prices", params={"meter": "input_tokens"}, headers=keys.admin)
    ).json()["items"]
    assert sorted(
        (p["match"]["model"], p["tenant_id"] or "", p["unit_amount"]) for p in all_input
    ) == [("claude-sonnet", "", "3.00"), ("gpt-4o", "", "2.50"), ("gpt-4o", "acme", "2.00")]

    march = datetime(2026, 3, 10, 12, tzinfo=UTC)
    january = datetime(2026, 1, 10, 12, tzinfo=UTC)
    async with sessionmaker() as session:
        service = PriceService(session)
        acme_rules = await service.rules_for("input_tokens", "acme")
        globex_rules = await service.rules_for("input_tokens", "globex")
        output_rules = await service.rules_for("output_tokens", "acme")

    def price_for(rules: Any, tenant: str, model: str, at: datetime) -> tuple[str, Decimal]:
        rule = resolve_price(rules, tenant_id=tenant, attributes={"model": model}, at=at)
        assert rule is not None
        return rule.tenant_id or "list", rule.unit_amount

    assert price_for(acme_rules, "acme", "gpt-4o", march) == ("acme", Decimal("2.00"))
    assert price_for(acme_rules, "acme", "gpt-4o", january) == ("list", Decimal("2.50"))
    assert price_for(acme_rules, "acme", "claude-sonnet", march) == ("list", Decimal("3.00"))
    assert price_for(globex_rules, "globex", "gpt-4o", march) == ("list", Decimal("2.50"))
    assert price_for(output_rules, "acme", "gpt-4o", march) == ("list", Decimal("10.00"))
    assert all(rule.tenant_id is None for rule in globex_rules)
    assert {rule.per_units for rule in acme_rules} == {Decimal(1000000)}
    assert {rule.currency for rule in acme_rules} == {"USD"}
    unknown_model = resolve_price(
        acme_rules, tenant_id="acme", attributes={"model": "llama"}, at=march
    )
    assert unknown_model is None
