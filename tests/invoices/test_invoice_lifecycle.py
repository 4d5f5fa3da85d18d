"""Finalizing, fetching, listing, exporting and voiding invoices."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from service.invoices.export import invoice_csv
from service.invoices.schemas import InvoiceLineOut, InvoiceOut
from tests.conftest import Keys
from tests.invoices.conftest import (
    Client,
    Record,
    Usage,
    create_meter,
    create_price,
    create_tenant,
    finalize,
    finalized,
    preview,
)
from tests.support.problems import assert_problem


@pytest.fixture
async def acme(client: Client, keys: Keys, record: Record) -> dict[str, str]:
    """Tenant acme (UTC) with gpt-4o tokens at 2.00 per 1M; 1.5M tokens in September 2026.
    Returns {"price": id}."""
    await create_tenant(client, keys, "acme")
    await create_tenant(client, keys, "globex")
    await create_meter(client, keys, "tokens", "Tokens", "sum", unit="tokens")
    price_id = await create_price(
        client, keys, "tokens", unit_amount="2.00", per_units="1000000", match={"model": "gpt-4o"}
    )
    await record(
        "acme",
        [
            Usage("tokens", "2026-09-01T00:00:00+00:00", 1_000_000, model="gpt-4o"),
            Usage("tokens", "2026-09-30T23:59:59+00:00", 500_000, model="gpt-4o"),
        ],
    )
    await record("globex", [Usage("tokens", "2026-09-10T00:00:00+00:00", 10, model="gpt-4o")])
    return {"price": price_id}


@pytest.mark.usefixtures("acme")
async def test_finalized_invoice_is_byte_identical_after_prices_change_and_events_go(
    client: Client, keys: Keys, billing: dict[str, str], pg_pool: asyncpg.Pool, acme: dict[str, str]
) -> None:
    [invoice] = await finalized(client, billing, "acme", "2026-09")
    assert invoice["total"] == "3.00"
    before = await client.get(f"/v1/invoices/{invoice['id']}", headers=billing)
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("application/json")

    # The price ends mid-September and a contract override appears: a fresh rating differs...
    ended = await client.post(
        f"/v1/prices/{acme['price']}/end",
        json={"effective_to": "2026-09-15T00:00:00Z"},
        headers=keys.admin,
    )
    assert ended.status_code == 200, ended.text
    await create_price(
        client,
        keys,
        "tokens",
        unit_amount="9.00",
        per_units="1000000",
        match={"model": "gpt-4o"},
        tenant_id="acme",
    )
    [draft] = await preview(client, billing, "acme", "2026-09")
    assert draft["total"] != invoice["total"]
    # ... and the raw events are deleted (rollups stay).
    assert await pg_pool.execute("DELETE FROM events WHERE tenant_id = 'acme'") == "DELETE 2"

    after = await client.get(f"/v1/invoices/{invoice['id']}", headers=billing)
    assert after.status_code == 200
    assert after.content == before.content
    listed = await client.get("/v1/invoices", params={"tenant_id": "acme"}, headers=billing)
    assert listed.json()["items"] == [before.json()]


@pytest.mark.usefixtures("acme")
async def test_finalizing_twice_is_409(client: Client, billing: dict[str, str]) -> None:
    await finalized(client, billing, "acme", "2026-09")
    again = await finalize(client, billing, "acme", "2026-09")
    assert_problem(again, 409, "invoice_exists")
    assert "ACME-000001" in again.json()["detail"]


@pytest.mark.usefixtures("acme")
async def test_concurrent_finalizations_make_one_invoice_and_keep_numbers_gapless(
    client: Client, billing: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    for round_, period in enumerate(("2026-08", "2026-09", "2026-10"), start=1):
        responses = await asyncio.gather(
            *(finalize(client, billing, "acme", period) for _ in range(3))
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201, 409, 409], [r.text for r in responses]
        [winner] = [r.json() for r in responses if r.status_code == 201]
        assert [i["number"] for i in winner] == [f"ACME-{round_:06d}"]
        for loser in responses:
            if loser.status_code == 409:
                assert loser.json()["code"] == "invoice_exists"
    assert await pg_pool.fetchval("SELECT count(*) FROM invoices") == 3
    assert await pg_pool.fetchval("SELECT last_number FROM invoice_counters") == 3


async def test_a_period_that_has_not_ended_is_422(
    client: Client, keys: Keys, billing: dict[str, str]
) -> None:
    await create_tenant(client, keys, "acme", timezone="Pacific/Kiritimati")
    response = await finalize(client, billing, "acme", "2099-01")
    assert_problem(response, 422, "period_not_ended")
    # Previews are fine any time.
    [draft] = await preview(client, billing, "acme", "2099-01")
    assert draft["status"] == "draft" and draft["lines"] == []
    for bad in ("2026-13", "26-01", "2026-1", "0000-01"):
        response = await client.get(
            "/v1/tenants/acme/invoices/preview", params={"period": bad}, headers=billing
        )
        assert_problem(response, 422, "validation_error")
        assert_problem(await finalize(client, billing, "acme", bad), 422, "validation_error")


async def test_unknown_tenant_and_invoice_are_404(client: Client, billing: dict[str, str]) -> None:
    assert_problem(await finalize(client, billing, "nobody", "2026-09"), 404, "not_found")
    response = await client.get(
        "/v1/tenants/nobody/invoices/preview", params={"period": "2026-09"}, headers=billing
    )
    assert_problem(response, 404, "not_found")
    missing = "/v1/invoices/00000000-0000-0000-0000-000000000001"
    assert_problem(await client.get(missing, headers=billing), 404, "not_found")
    assert_problem(await client.post(f"{missing}/void", headers=billing), 404, "not_found")


@pytest.mark.usefixtures("acme")
async def test_void_then_finalize_again_gets_a_new_number(
    client: Client, billing: dict[str, str]
) -> None:
    [first] = await finalized(client, billing, "acme", "2026-09")
    voided = await client.post(f"/v1/invoices/{first['id']}/void", headers=billing)
    assert voided.status_code == 200, voided.text
    body = voided.json()
    assert body["status"] == "void" and body["voided_at"] is not None
    assert {k: v for k, v in body.items() if k not in ("status", "voided_at")} == {
        k: v for k, v in first.items() if k not in ("status", "voided_at")
    }
    fetched = await client.get(f"/v1/invoices/{first['id']}", headers=billing)
    assert fetched.json() == body

    again = await client.post(f"/v1/invoices/{first['id']}/void", headers=billing)
    assert_problem(again, 409, "invoice_already_void")

    [second] = await finalized(client, billing, "acme", "2026-09")
    assert second["number"] == "ACME-000002"
    assert second["id"] != first["id"]
    assert second["lines"] == first["lines"] and second["total"] == first["total"]
    assert_problem(await finalize(client, billing, "acme", "2026-09"), 409, "invoice_exists")

    void_list = await client.get(
        "/v1/invoices", params={"tenant_id": "acme", "status": "void"}, headers=billing
    )
    assert [i["number"] for i in void_list.json()["items"]] == ["ACME-000001"]
    live = await client.get(
        "/v1/invoices",
        params={"tenant_id": "acme", "status": "finalized", "period": "2026-09"},
        headers=billing,
    )
    assert [i["number"] for i in live.json()["items"]] == ["ACME-000002"]


@pytest.mark.usefixtures("acme")
async def test_csv_export_has_a_header_and_one_row_per_line(
    client: Client, keys: Keys, billing: dict[str, str], record: Record
) -> None:
    await record("acme", [Usage("tokens", "2026-09-05T00:00:00+00:00", 7, model="llama, local")])
    [invoice] = await finalized(client, billing, "acme", "2026-09")
    response = await client.get(
        f"/v1/invoices/{invoice['id']}", headers={**billing, "Accept": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="ACME-000001.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == len(invoice["lines"]) + 2 == 4
    priced, unpriced, _, _ = rows
    assert priced["invoice_number"] == "ACME-000001"
    assert priced["currency"] == "USD"
    assert priced["meter"] == "tokens"
    assert priced["match"] == "model=gpt-4o"
    assert (priced["quantity"], priced["unit_amount"], priced["per_units"]) == (
        "1500000",
        "2.00",
        "1000000",
    )
    assert priced["amount"] == "3.00"
    assert priced["period_start"] == "2026-09-01T00:00:00Z"
    assert priced["unpriced"] == "false" and priced["tier"] == ""
    assert priced["price_id"] == invoice["lines"][0]["price_id"]
    assert unpriced["unpriced"] == "true" and unpriced["amount"] == "0.00"
    assert unpriced["match"] == "model=llama, local"
    assert unpriced["description"].startswith("Tokens")
    assert response.text.splitlines()[0].startswith("invoice_number,invoice_id,tenant_id")


@pytest.mark.usefixtures("acme")
async def test_csv_export_ends_with_subtotal_and_total_rows_that_add_up(
    client: Client, keys: Keys, billing: dict[str, str], record: Record
) -> None:
    await create_price(client, keys, "tokens", unit_amount="0.10", match={"model": "llama"})
    await record("acme", [Usage("tokens", "2026-09-05T00:00:00+00:00", 7, model="llama")])
    [invoice] = await finalized(client, billing, "acme", "2026-09")
    response = await client.get(
        f"/v1/invoices/{invoice['id']}", headers={**billing, "Accept": "text/csv"}
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["row_type"] for row in rows] == ["line", "line", "subtotal", "total"]
    lines, (subtotal, total) = rows[:-2], rows[-2:]
    assert sum(Decimal(row["amount"]) for row in lines) == Decimal(subtotal["amount"])
    assert (subtotal["amount"], total["amount"]) == (invoice["subtotal"], invoice["total"])
    assert (subtotal["amount"], total["amount"]) == ("3.70", "3.70")
    for row in (subtotal, total):
        assert row["invoice_number"] == invoice["number"] == "ACME-000001"
        assert (row["currency"], row["period"], row["meter"]) == ("USD", "2026-09", "")
        assert row["period_start"] == invoice["period_start"]
    assert (subtotal["description"], total["description"]) == ("Subtotal", "Total")


@pytest.mark.usefixtures("acme")
async def test_list_is_paginated_and_tenant_bound_keys_see_their_tenant_only(
    client: Client, keys: Keys, billing: dict[str, str]
) -> None:
    for period in ("2026-07", "2026-08", "2026-09"):
        await finalized(client, billing, "acme", period)
    [globex] = await finalized(client, billing, "globex", "2026-09")

    numbers: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/invoices", params=params, headers=billing)).json()
        numbers += [i["number"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert numbers == ["ACME-000001", "ACME-000002", "ACME-000003", "GLOBEX-000001"]
    by_period = await client.get("/v1/invoices", params={"period": "2026-09"}, headers=billing)
    assert {i["number"] for i in by_period.json()["items"]} == {"ACME-000003", "GLOBEX-000001"}

    bound = await keys.make("billing", tenant_id="acme")
    mine = (await client.get("/v1/invoices", headers=bound)).json()["items"]
    assert [i["tenant_id"] for i in mine] == ["acme"] * 3
    assert_problem(
        await client.get("/v1/invoices", params={"tenant_id": "globex"}, headers=bound),
        403,
        "forbidden",
    )
    assert_problem(
        await client.get(f"/v1/invoices/{globex['id']}", headers=bound), 403, "forbidden"
    )
    assert_problem(
        await client.post(f"/v1/invoices/{globex['id']}/void", headers=bound), 403, "forbidden"
    )
    assert_problem(await finalize(client, bound, "globex", "2026-08"), 403, "forbidden")
    read_only = await keys.make("read", tenant_id="acme")
    assert_problem(await client.get("/v1/invoices", headers=read_only), 403, "forbidden")


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_quoted() -> None:
    at = datetime(2026, 9, 1, tzinfo=UTC)
    line = InvoiceLineOut(
        meter="tokens",
        description="=HYPERLINK(1)",
        match={},
        period_start=at,
        period_end=at,
        quantity="-5",
        unit_amount="2.00",
        per_units="1",
        amount="-10.00",
        tier=None,
        unpriced=False,
        adjusts_period="2026-08",
        price_id=None,
    )
    invoice = InvoiceOut(
        id=None,
        number=None,
        tenant_id="acme",
        status="draft",
        period="2026-09",
        period_start=at,
        period_end=at,
        currency="USD",
        lines=[line],
        subtotal="-10.00",
        total="-10.00",
        finalized_at=None,
        voided_at=None,
    )
    [row, _, _] = list(csv.DictReader(io.StringIO(invoice_csv(invoice))))
    assert row["description"] == "'=HYPERLINK(1)"
    assert (row["quantity"], row["amount"]) == ("-5", "-10.00")  # numbers stay numbers
    assert row["adjusts_period"] == "2026-08"
