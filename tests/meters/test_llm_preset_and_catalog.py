"""The LLM preset and the catalog price import, through the API and the command line."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys
from tests.support.problems import assert_problem
from tests.test_cli import run_cli

Client = AsyncTestClient[Litestar]
SINCE = "2026-01-01T00:00:00Z"
DIMENSIONS = [
    "provider",
    "requested_model",
    "operation",
    "status",
    "error_code",
    "streamed",
    "user_tier",
]
PRESET = [
    # event_name, aggregation, unit, billable, currency
    ("llm_requests", "count", "requests", False, "USD"),
    ("input_tokens", "sum", "tokens", True, "USD"),
    ("output_tokens", "sum", "tokens", True, "USD"),
    ("cache_write_5m_tokens", "sum", "tokens", True, "USD"),
    ("cache_write_1h_tokens", "sum", "tokens", True, "USD"),
    ("cache_read_tokens", "sum", "tokens", True, "USD"),
    ("latency_ms", "sum", "ms", False, None),
    ("ttft_ms", "sum", "ms", False, None),
]


def shape(meters: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (m["event_name"], m["aggregation"], m["unit"], m["billable"], m["currency"]) for m in meters
    ]


async def apply_preset(client: Client, keys: Keys, **body: Any) -> Any:
    return await client.post("/v1/meters/presets/llm", json=body, headers=keys.admin)


async def test_the_preset_creates_the_llm_meters_once(client: Client, keys: Keys) -> None:
    first = await apply_preset(client, keys)
    assert first.status_code == 200, first.text
    assert shape(first.json()["meters"]) == PRESET
    assert all(m["dimensions"] == DIMENSIONS for m in first.json()["meters"])
    again = await apply_preset(client, keys, currency="USD")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    listed = await client.get("/v1/meters", headers=keys.admin)
    assert sorted(m["event_name"] for m in listed.json()["items"]) == sorted(
        row[0] for row in PRESET
    )


async def test_the_preset_keeps_fitting_meters_and_refuses_unfit_ones(
    client: Client, keys: Keys
) -> None:
    body = {
        "event_name": "input_tokens",
        "name": "Prompt",
        "aggregation": "sum",
        "currency": "EUR",
        "dimensions": ["region"],
    }
    assert (await client.post("/v1/meters", json=body, headers=keys.admin)).status_code == 201
    # Asked for USD while input_tokens bills in EUR: refused, nothing created.
    refused = await apply_preset(client, keys, currency="USD")
    assert_problem(refused, 409, "preset_conflict", "input_tokens")
    assert len((await client.get("/v1/meters", headers=keys.admin)).json()["items"]) == 1
    # Without a currency the existing meter is used as it is, its dimensions added to.
    kept = await apply_preset(client, keys)
    assert kept.status_code == 200, kept.text
    [meter] = [m for m in kept.json()["meters"] if m["event_name"] == "input_tokens"]
    assert (meter["name"], meter["currency"]) == ("Prompt", "EUR")
    assert meter["dimensions"] == ["region", *DIMENSIONS]
    assert_problem(
        await apply_preset(client, keys, currency="usd"), 422, "validation_error", "currency"
    )


async def test_a_meter_of_another_aggregation_cannot_serve_the_preset(
    client: Client, keys: Keys
) -> None:
    body = {"event_name": "ttft_ms", "name": "TTFT", "aggregation": "last", "billable": False}
    assert (await client.post("/v1/meters", json=body, headers=keys.admin)).status_code == 201
    assert_problem(await apply_preset(client, keys), 409, "preset_conflict", "ttft_ms")
    assert len((await client.get("/v1/meters", headers=keys.admin)).json()["items"]) == 1


async def import_llm(client: Client, keys: Keys, **body: Any) -> Any:
    body.setdefault("effective_from", SINCE)
    return await client.post("/v1/prices/import/llm", json=body, headers=keys.admin)


def by_meter(created: list[dict[str, Any]], model: str) -> dict[str, tuple[Any, ...]]:
    return {
        p["meter"]: (p["unit_amount"], p["per_units"], p["relative_to"])
        for p in created
        if p["match"] == {"model": model}
    }


async def test_catalog_import_gives_the_pinned_catalog_prices(client: Client, keys: Keys) -> None:
    assert (await apply_preset(client, keys)).status_code == 200
    response = await import_llm(client, keys, models=["gpt-4o", "claude-sonnet-4", "no-such-llm"])
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["not_found"] == ["no-such-llm"]
    assert answer["conflicts"] == []
    per_m = "1000000"
    # genai-prices 0.2.3: gpt-4o has no cache-write prices, so they are relative to input.
    assert by_meter(answer["created"], "gpt-4o") == {
        "input_tokens": ("2.50", per_m, None),
        "output_tokens": ("10.00", per_m, None),
        "cache_read_tokens": ("1.25", per_m, None),
        "cache_write_5m_tokens": (None, per_m, {"meter": "input_tokens", "factor": "1.25"}),
        "cache_write_1h_tokens": (None, per_m, {"meter": "input_tokens", "factor": "2"}),
    }
    # claude-sonnet-4 (the catalog's claude-sonnet-4-0) has both cache-write prices.
    assert by_meter(answer["created"], "claude-sonnet-4") == {
        "input_tokens": ("3.00", per_m, None),
        "output_tokens": ("15.00", per_m, None),
        "cache_read_tokens": ("0.30", per_m, None),
        "cache_write_5m_tokens": ("3.75", per_m, None),
        "cache_write_1h_tokens": ("6.00", per_m, None),
    }
    assert all(p["tenant_id"] is None and p["currency"] == "USD" for p in answer["created"])


async def test_catalog_import_reports_conflicts_and_creates_the_rest(
    client: Client, keys: Keys
) -> None:
    assert (await apply_preset(client, keys)).status_code == 200
    await client.post("/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=keys.admin)
    override = await client.post(
        "/v1/prices",
        json={
            "meter": "input_tokens",
            "match": {"model": "gpt-4o"},
            "tenant_id": "acme",
            "unit_amount": "2.00",
            "per_units": "1000000",
            "effective_from": SINCE,
        },
        headers=keys.admin,
    )
    assert override.status_code == 201, override.text
    # A dated snapshot name resolves in the catalog; the price matches the name as given.
    response = await import_llm(
        client,
        keys,
        models=["gpt-4o", "claude-sonnet-4-20250514"],
        provider="anthropic",
        tenant_id="acme",
    )
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["not_found"] == ["gpt-4o"]  # not an Anthropic model
    assert {p["meter"] for p in answer["created"]} == {
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
    }
    assert all(p["match"] == {"model": "claude-sonnet-4-20250514"} for p in answer["created"])
    assert all(p["tenant_id"] == "acme" for p in answer["created"])
    # gpt-4o for acme: its input overlaps the override; the other four are created.
    response = await import_llm(client, keys, models=["gpt-4o"], tenant_id="acme")
    answer = response.json()
    assert answer["conflicts"] == [
        {"model": "gpt-4o", "meter": "input_tokens", "price_id": override.json()["id"]}
    ]
    assert len(answer["created"]) == 4
    # Importing again: everything conflicts, nothing is duplicated.
    again = (await import_llm(client, keys, models=["gpt-4o"], tenant_id="acme")).json()
    assert again["created"] == [] and len(again["conflicts"]) == 5


async def test_catalog_import_refuses_bad_input_naming_the_field(
    client: Client, keys: Keys
) -> None:
    missing = await import_llm(client, keys, models=["gpt-4o"])
    assert_problem(missing, 409, "preset_missing", "input_tokens")
    assert (await apply_preset(client, keys)).status_code == 200
    for body, field in (
        ({"models": []}, "models"),
        ({"models": ["gpt-4o", "gpt-4o"]}, "models"),
        ({"models": ["gpt-4o"], "provider": "nobody"}, "provider"),
        ({"models": ["gpt-4o"], "tenant_id": "ghost"}, "tenant_id"),
        ({"models": ["gpt-4o"], "effective_from": "2026-01-01T00:07:00Z"}, "effective_from"),
    ):
        assert_problem(await import_llm(client, keys, **body), 422, "validation_error", field)


async def test_the_command_line_applies_the_preset_and_imports_prices(
    client: Client, keys: Keys, database_url: str
) -> None:
    preset = run_cli("meters", "preset-llm", database_url=database_url)
    assert preset.returncode == 0, preset.stderr
    assert "input_tokens" in preset.stdout and "not billable" in preset.stdout
    assert run_cli("meters", "preset-llm", database_url=database_url).stdout == preset.stdout
    imported = run_cli(
        "prices",
        "import-llm",
        "--model",
        "gpt-4o",
        "--model",
        "nope-1",
        "--effective-from",
        SINCE,
        database_url=database_url,
    )
    assert imported.returncode == 0, imported.stderr
    assert "not found nope-1" in imported.stdout
    prices = await client.get("/v1/prices?meter=output_tokens", headers=keys.admin)
    assert [(p["match"], p["unit_amount"]) for p in prices.json()["items"]] == [
        ({"model": "gpt-4o"}, "10.00")
    ]
    bad = run_cli(
        "prices",
        "import-llm",
        "--model",
        "gpt-4o",
        "--provider",
        "nobody",
        database_url=database_url,
    )
    assert bad.returncode != 0 and "provider 'nobody'" in bad.stderr
