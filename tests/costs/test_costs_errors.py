"""Every way a costs query can be wrong gets a problem+json answer naming the field (never a
500); keys see only what their scope and tenant binding allow."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Keys
from tests.costs.conftest import Client, costs
from tests.invoices.conftest import create_meter, create_tenant

MONTH = {"tenant_id": "acme", "from_": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


@pytest.fixture
async def world(client: Client, keys: Keys) -> dict[str, str]:
    await create_tenant(client, keys, "acme", timezone="Europe/Berlin")
    await create_tenant(client, keys, "globex")
    await create_meter(client, keys, "tokens", "Tokens", "sum", dimensions=["region"])
    await create_meter(client, keys, "euro_calls", "Calls", "count", currency="EUR")
    await create_meter(client, keys, "latency", "Latency", "sum", billable=False, currency=None)
    return await keys.make("read")


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # name, parameters over MONTH, field, words the message must contain
    ("from not on a quarter hour", {"from_": "2026-11-01T00:07:00Z"}, "from", "15-minute"),
    ("to not a time", {"to": "tomorrow"}, "to", "RFC 3339"),
    ("from after to", {"from_": "2026-12-03T00:00:00Z"}, "to", "after"),
    ("unknown window size", {"window_size": "week"}, "window_size", "week"),
    ("unknown zone", {"timezone": "Mars/Olympus_Mons"}, "timezone", "IANA"),
    ("misspelt group_by", {"groupby": "model"}, "groupby", "unknown query parameter"),
    ("unknown group key", {"group_by": "colour"}, "group_by", "colour"),
    ("unknown filter key", {"filter": "colour:red"}, "filter", "colour"),
    ("filter without colon", {"filter": "model"}, "filter", "key:value"),
    ("unknown meter", {"meter": "nope"}, "meter", "nope"),
    ("meter that is not billable", {"meter": "latency"}, "meter", "not billable"),
    ("meter in another currency", {"meter": "euro_calls"}, "currency", "EUR"),
    ("unknown currency", {"currency": "XYZ"}, "currency", "ISO 4217"),
    ("lower-case currency", {"currency": "usd"}, "currency", "ISO 4217"),
    ("order by value", {"order_by": "value"}, "order_by", "value"),
    ("limit 0", {"limit": 0}, "limit", ""),
    ("limit too large", {"limit": 10_001}, "limit", ""),
    ("limit not a number", {"limit": "ten"}, "limit", ""),
    ("period with from and to", {"period": "2026-11"}, "period", ""),
    ("unknown period", {"from_": None, "to": None, "period": "fortnight"}, "period", ""),
    ("neither period nor from/to", {"from_": None, "to": None}, "from", "period"),
    ("tenant_id missing for an unbound key", {"tenant_id": ""}, "tenant_id", "required"),
    ("before invoice periods", {"from_": "1990-01-01T00:00:00Z"}, "from", "between"),
    (
        "too many windows",
        {"window_size": "hour", "to": "2028-01-01T00:00:00Z"},
        "window_size",
        "10000",
    ),
]


@pytest.mark.parametrize(("name", "overrides", "field", "words"), CASES, ids=[c[0] for c in CASES])
async def test_invalid_query_is_422_naming_the_field(
    client: Client,
    world: dict[str, str],
    name: str,
    overrides: dict[str, Any],
    field: str,
    words: str,
) -> None:
    params = {k: v for k, v in {**MONTH, **overrides}.items() if v is not None}
    problem = await costs(client, world, 422, **params)
    assert problem["status"] == 422
    fields = [e["field"] for e in problem.get("errors") or []]
    assert field in fields, problem
    assert words in problem["detail"], problem


async def test_problems_are_reported_together(client: Client, world: dict[str, str]) -> None:
    params = {**MONTH, "to": "soon", "filter": "nonsense", "currency": "dollars"}
    problem = await costs(client, world, 422, **params)
    assert {e["field"] for e in problem["errors"]} == {"to", "filter", "currency"}


async def test_unknown_tenant_is_404(client: Client, world: dict[str, str]) -> None:
    await costs(client, world, 404, **{**MONTH, "tenant_id": "ghost"})


async def test_a_key_bound_to_another_tenant_is_403(client: Client, keys: Keys, world: Any) -> None:
    for scope in ("read", "billing"):
        bound = await keys.make(scope, tenant_id="globex")
        await costs(client, bound, 403, **MONTH)
        answer = await costs(client, bound, 200, **{**MONTH, "tenant_id": ""})
        assert answer["tenant_id"] == "globex"


async def test_an_ingest_key_is_403(client: Client, keys: Keys, world: Any) -> None:
    await costs(client, await keys.make("ingest"), 403, **MONTH)


async def test_the_other_currency_prices_its_own_meters(
    client: Client, world: dict[str, str]
) -> None:
    answer = await costs(client, world, **MONTH, currency="EUR", meter="euro_calls")
    assert answer["currency"] == "EUR"
    assert answer["meter"] == "euro_calls"
    assert answer["timezone"] == "Europe/Berlin"
    assert answer["from"] == "2026-11-01T01:00:00+01:00"


async def test_period_stands_for_from_and_to_in_the_zone(
    client: Client, world: dict[str, str]
) -> None:
    """acme is in Europe/Berlin: period=2026-11 is its local November."""
    answer = await costs(client, world, tenant_id="acme", period="2026-11")
    assert (answer["from"], answer["to"]) == (
        "2026-11-01T00:00:00+01:00",
        "2026-12-01T00:00:00+01:00",
    )
    utc = await costs(client, world, tenant_id="acme", period="2026-11", timezone="UTC")
    assert (utc["from"], utc["to"]) == ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
