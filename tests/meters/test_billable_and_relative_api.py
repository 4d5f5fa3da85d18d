"""Billable meters and relative prices through the admin API."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys
from tests.support.problems import assert_problem

Client = AsyncTestClient[Litestar]
JAN = "2026-01-01T00:00:00Z"


async def meter(client: Client, keys: Keys, event_name: str, **fields: Any) -> Any:
    body = {"event_name": event_name, "name": event_name, "aggregation": "sum", **fields}
    return await client.post("/v1/meters", json=body, headers=keys.admin)


async def price(client: Client, keys: Keys, **fields: Any) -> Any:
    body = {"effective_from": JAN, "match": {"model": "gpt-4o"}, **fields}
    return await client.post("/v1/prices", json=body, headers=keys.admin)


# Billable ---------------------------------------------------------------------------------


async def test_billable_defaults_to_true_and_a_billable_meter_needs_a_currency(
    client: Client, keys: Keys
) -> None:
    created = await meter(client, keys, "input_tokens", currency="USD")
    assert created.status_code == 201, created.text
    assert created.json()["billable"] is True
    assert_problem(await meter(client, keys, "output_tokens"), 422, "validation_error", "currency")


async def test_a_non_billable_meter_may_omit_currency_and_cannot_be_priced(
    client: Client, keys: Keys
) -> None:
    created = await meter(client, keys, "latency_ms", unit="ms", billable=False)
    assert created.status_code == 201, created.text
    assert (created.json()["billable"], created.json()["currency"]) == (False, None)
    refused = await price(client, keys, meter="latency_ms", unit_amount="1")
    assert_problem(refused, 422, "validation_error", "meter")
    # Making it billable needs a currency, in the same PATCH or before.
    patch = await client.patch("/v1/meters/latency_ms", json={"billable": True}, headers=keys.admin)
    assert_problem(patch, 422, "validation_error", "currency")
    patch = await client.patch(
        "/v1/meters/latency_ms", json={"billable": True, "currency": "EUR"}, headers=keys.admin
    )
    assert patch.status_code == 200, patch.text
    assert (patch.json()["billable"], patch.json()["currency"]) == (True, "EUR")


async def test_billable_is_patchable_and_a_priced_meter_keeps_its_currency(
    client: Client, keys: Keys
) -> None:
    assert (await meter(client, keys, "input_tokens", currency="USD")).status_code == 201
    assert (await price(client, keys, meter="input_tokens", unit_amount="2")).status_code == 201
    off = await client.patch(
        "/v1/meters/input_tokens", json={"billable": False}, headers=keys.admin
    )
    assert off.status_code == 200, off.text
    assert off.json()["billable"] is False
    drop = await client.patch(
        "/v1/meters/input_tokens", json={"currency": None}, headers=keys.admin
    )
    assert_problem(drop, 422, "validation_error", "currency")


# Relative prices --------------------------------------------------------------------------


async def llm_meters(client: Client, keys: Keys) -> None:
    for name in ("input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens"):
        assert (await meter(client, keys, name, currency="USD")).status_code == 201
    assert (await meter(client, keys, "eur_tokens", currency="EUR")).status_code == 201


async def test_a_relative_price_may_precede_its_reference_and_answers_its_factor(
    client: Client, keys: Keys
) -> None:
    await llm_meters(client, keys)
    created = await price(
        client,
        keys,
        meter="cache_write_5m_tokens",
        relative_to={"meter": "input_tokens", "factor": "1.25"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["relative_to"] == {"meter": "input_tokens", "factor": "1.25"}
    assert (body["unit_amount"], body["per_units"], body["currency"]) == (None, None, "USD")
    got = await client.get(f"/v1/prices/{body['id']}", headers=keys.admin)
    assert got.json() == body
    plain = await price(client, keys, meter="input_tokens", unit_amount="2.50")
    assert plain.json()["relative_to"] is None
    assert (plain.json()["unit_amount"], plain.json()["per_units"]) == ("2.50", "1")


async def test_relative_prices_refuse_bad_input_naming_the_field(
    client: Client, keys: Keys
) -> None:
    await llm_meters(client, keys)
    ref = {"meter": "input_tokens", "factor": "1.25"}
    cases = [
        ({"relative_to": ref, "unit_amount": "1"}, "unit_amount"),
        (
            {"relative_to": ref, "tiers": [{"up_to": None, "unit_amount": "1"}]},
            "tiers",
        ),
        ({"relative_to": {"meter": "input_tokens", "factor": "0"}}, "relative_to.factor"),
        ({"relative_to": {"meter": "input_tokens", "factor": "-1"}}, "relative_to.factor"),
        ({"relative_to": {"meter": "nope", "factor": "1"}}, "relative_to.meter"),
        # Another currency: EUR tokens cannot price USD cache writes.
        ({"relative_to": {"meter": "eur_tokens", "factor": "1"}}, "relative_to.meter"),
    ]
    for fields, field in cases:
        response = await price(client, keys, meter="cache_write_5m_tokens", **fields)
        assert_problem(response, 422, "validation_error", field)


async def test_cycles_are_refused_with_price_cycle(client: Client, keys: Keys) -> None:
    await llm_meters(client, keys)

    def ref(meter: str) -> dict[str, str]:
        return {"meter": meter, "factor": "2"}

    itself = await price(client, keys, meter="input_tokens", relative_to=ref("input_tokens"))
    assert_problem(itself, 422, "price_cycle", "relative_to.meter")
    first = await price(
        client, keys, meter="cache_write_1h_tokens", relative_to=ref("cache_write_5m_tokens")
    )
    assert first.status_code == 201, first.text
    second = await price(
        client, keys, meter="cache_write_5m_tokens", relative_to=ref("input_tokens")
    )
    assert second.status_code == 201, second.text
    # input -> 1h -> 5m -> input would close a loop, even for another tenant or match.
    closing = await price(
        client,
        keys,
        meter="input_tokens",
        match={"model": "other"},
        relative_to=ref("cache_write_1h_tokens"),
    )
    assert_problem(closing, 422, "price_cycle", "relative_to.meter")
    assert "input_tokens -> cache_write_1h_tokens" in closing.json()["detail"]


async def test_currency_of_meters_linked_by_relative_prices_is_kept(
    client: Client, keys: Keys
) -> None:
    await llm_meters(client, keys)
    created = await price(
        client,
        keys,
        meter="cache_write_5m_tokens",
        relative_to={"meter": "input_tokens", "factor": "1.25"},
    )
    assert created.status_code == 201
    for name in ("input_tokens", "cache_write_5m_tokens"):
        patch = await client.patch(
            f"/v1/meters/{name}", json={"currency": "EUR"}, headers=keys.admin
        )
        assert_problem(patch, 422, "validation_error", "currency")
