"""Golden invoices: an LLM tenant's month, every line and total worked out by hand.

Tenant `acme` bills in Europe/Berlin time: October 2026 is [2026-09-30T22:00Z,
2026-10-31T23:00Z) (summer time ends on October 25). Its meters bill in USD, JPY and KWD, so
it gets three invoices.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Keys
from tests.invoices.conftest import (
    Client,
    Record,
    Usage,
    brief,
    create_meter,
    create_price,
    create_tenant,
    finalized,
    preview,
)

PER_M = "1000000"
OCT_START = "2026-09-30T22:00:00Z"
OCT_END = "2026-10-31T23:00:00Z"
PRICE_CHANGE = "2026-10-16T00:00:00Z"


async def build_llm_catalog(client: Client, keys: Keys) -> None:
    await create_tenant(client, keys, "acme", timezone="Europe/Berlin")
    await create_tenant(client, keys, "globex", timezone="UTC")
    for event_name, name, dimensions in (
        ("input_tokens", "Input tokens", ["region"]),
        ("output_tokens", "Output tokens", []),
        ("cache_write_tokens", "Cache write tokens", []),
        ("cache_read_tokens", "Cache read tokens", []),
    ):
        await create_meter(
            client, keys, event_name, name, "sum", unit="tokens", dimensions=dimensions
        )
    await create_meter(client, keys, "api_calls", "API calls", "count", unit="calls")
    await create_meter(client, keys, "seats", "Seats", "last", unit="seats")
    await create_meter(client, keys, "gpu_seconds", "GPU seconds", "sum", currency="JPY")
    await create_meter(client, keys, "sms", "SMS messages", "count", currency="KWD")

    def per_million(meter: str, amount: str, **fields: Any) -> Any:
        return create_price(client, keys, meter, unit_amount=amount, per_units=PER_M, **fields)

    gpt, claude = {"model": "gpt-4o"}, {"model": "claude-sonnet"}
    # gpt-4o input got cheaper in the middle of October.
    await per_million("input_tokens", "2.50", match=gpt, effective_to=PRICE_CHANGE)
    await per_million("input_tokens", "2.00", match=gpt, effective_from=PRICE_CHANGE)
    await per_million("output_tokens", "10.00", match=gpt)
    await per_million("output_tokens", "8.00", match={**gpt, "project_id": "research"})
    await per_million("cache_read_tokens", "1.25", match=gpt)
    await per_million("input_tokens", "3.00", match=claude)
    await per_million("input_tokens", "3.30", match={**claude, "region": "eu"})
    await per_million("output_tokens", "15.00", match=claude)
    await per_million("cache_write_tokens", "3.75", match=claude)
    await per_million("cache_read_tokens", "0.30", match=claude)
    # acme's contract: claude-sonnet output at 12.00 instead of the list 15.00.
    await per_million("output_tokens", "12.00", match=claude, tenant_id="acme")
    # llama-local runs on the tenant's own hardware: no price, reported as unpriced.
    await create_price(
        client,
        keys,
        "api_calls",
        tiers=[
            {"up_to": 100, "unit_amount": "0"},
            {"up_to": 1000, "unit_amount": "0.01"},
            {"up_to": None, "unit_amount": "0.005"},
        ],
    )
    await create_price(client, keys, "seats", unit_amount="8.00")
    await create_price(client, keys, "gpu_seconds", unit_amount="0.50")
    await create_price(client, keys, "sms", unit_amount="0.0125")


def llm_usage() -> list[Usage]:
    def tokens(meter: str, ts: str, value: int, model: str, **fields: Any) -> Usage:
        return Usage(meter, ts, value, model=model, **fields)

    usage = [
        # gpt-4o input before the price change: 400k + 500k + 300k = 1.2M at 2.50
        # (the first one is October in Berlin, September in UTC).
        tokens("input_tokens", "2026-09-30T22:30:00+00:00", 400_000, "gpt-4o", user_id="u1"),
        tokens("input_tokens", "2026-10-05T10:00:00+00:00", 500_000, "gpt-4o", user_id="u2"),
        tokens("input_tokens", "2026-10-15T23:45:00+00:00", 300_000, "gpt-4o", user_id="u1"),
        # ... and after it: 500k + 300k = 800k at 2.00.
        tokens("input_tokens", "2026-10-16T00:00:00+00:00", 500_000, "gpt-4o", user_id="u1"),
        tokens("input_tokens", "2026-10-31T22:59:59+00:00", 300_000, "gpt-4o", user_id="u2"),
        # Outside the Berlin month: September and November.
        tokens("input_tokens", "2026-09-30T21:59:59+00:00", 999_999, "gpt-4o", user_id="u1"),
        tokens("input_tokens", "2026-10-31T23:00:00+00:00", 777_777, "gpt-4o", user_id="u1"),
        # claude-sonnet input: 2M at 3.00 (no region, or us), 500k in eu at 3.30.
        tokens("input_tokens", "2026-10-02T08:00:00+00:00", 1_500_000, "claude-sonnet"),
        tokens(
            "input_tokens",
            "2026-10-20T08:00:00+00:00",
            500_000,
            "claude-sonnet",
            user_id="u3",
            dimensions={"region": "us"},
        ),
        tokens(
            "input_tokens",
            "2026-10-21T08:00:00+00:00",
            500_000,
            "claude-sonnet",
            dimensions={"region": "eu"},
        ),
        # llama-local: 5M input, 1M output, unpriced, on both sides of the price change.
        tokens("input_tokens", "2026-10-03T08:00:00+00:00", 3_000_000, "llama-local"),
        tokens("input_tokens", "2026-10-25T08:00:00+00:00", 2_000_000, "llama-local"),
        tokens("output_tokens", "2026-10-25T09:00:00+00:00", 1_000_000, "llama-local"),
        # Output: gpt-4o 300k at 10.00, 200k for project research at 8.00, claude 400k at 12.
        tokens("output_tokens", "2026-10-04T08:00:00+00:00", 300_000, "gpt-4o", user_id="u1"),
        tokens(
            "output_tokens", "2026-10-04T09:00:00+00:00", 200_000, "gpt-4o", project_id="research"
        ),
        tokens(
            "output_tokens",
            "2026-10-04T10:00:00+00:00",
            400_000,
            "claude-sonnet",
            project_id="research",
        ),
        # Cache: claude writes 100k at 3.75 (0.375 rounds half up to 0.38), reads 1M at 0.30;
        # gpt-4o reads 500k at 1.25 (0.625 rounds to 0.63).
        tokens("cache_write_tokens", "2026-10-06T08:00:00+00:00", 100_000, "claude-sonnet"),
        tokens("cache_read_tokens", "2026-10-06T08:00:00+00:00", 1_000_000, "claude-sonnet"),
        tokens("cache_read_tokens", "2026-10-07T08:00:00+00:00", 500_000, "gpt-4o"),
        # Seats: the last value of the month counts: 6.
        Usage("seats", "2026-09-30T21:00:00+00:00", 50),
        Usage("seats", "2026-10-03T08:00:00+00:00", 5),
        Usage("seats", "2026-10-20T08:00:00+00:00", 7),
        Usage("seats", "2026-10-28T08:00:00+00:00", 6),
        Usage("seats", "2026-11-02T08:00:00+00:00", 100),
        # JPY: 1233 GPU seconds at 0.50 = 616.5, half up to 617 yen.
        Usage("gpu_seconds", "2026-10-08T08:00:00+00:00", 1000),
        Usage("gpu_seconds", "2026-10-09T08:00:00+00:00", 233),
    ]
    # 1234 API calls: 100 free, 900 at 0.01, 234 at 0.005.
    usage += [
        Usage("api_calls", f"2026-10-{1 + i % 30:02d}T{i % 24:02d}:{i % 60:02d}:00+00:00")
        for i in range(1234)
    ]
    # KWD: 37 messages at 0.0125 = 0.4625, half up to 0.463.
    usage += [Usage("sms", f"2026-10-10T08:{i:02d}:00+00:00") for i in range(37)]
    return usage


EXPECTED_USD = [
    # One line for the tiered price, showing the highest tier reached (its tiers are inside).
    ("api_calls", "API calls — graduated tiers", {}, "1234", "0.005", "1", "10.17", 3, False, None),
    (
        "cache_read_tokens",
        "Cache read tokens — model=claude-sonnet (per 1000000 tokens)",
        {"model": "claude-sonnet"},
        "1000000",
        "0.30",
        PER_M,
        "0.30",
        None,
        False,
        None,
    ),
    (
        "cache_read_tokens",
        "Cache read tokens — model=gpt-4o (per 1000000 tokens)",
        {"model": "gpt-4o"},
        "500000",
        "1.25",
        PER_M,
        "0.63",
        None,
        False,
        None,
    ),
    (
        "cache_write_tokens",
        "Cache write tokens — model=claude-sonnet (per 1000000 tokens)",
        {"model": "claude-sonnet"},
        "100000",
        "3.75",
        PER_M,
        "0.38",
        None,
        False,
        None,
    ),
    (
        "input_tokens",
        "Input tokens — model=claude-sonnet (per 1000000 tokens)",
        {"model": "claude-sonnet"},
        "2000000",
        "3.00",
        PER_M,
        "6.00",
        None,
        False,
        None,
    ),
    (
        "input_tokens",
        "Input tokens — model=claude-sonnet, region=eu (per 1000000 tokens)",
        {"model": "claude-sonnet", "region": "eu"},
        "500000",
        "3.30",
        PER_M,
        "1.65",
        None,
        False,
        None,
    ),
    (
        "input_tokens",
        "Input tokens — model=gpt-4o (per 1000000 tokens)",
        {"model": "gpt-4o"},
        "1200000",
        "2.50",
        PER_M,
        "3.00",
        None,
        False,
        None,
    ),
    (
        "input_tokens",
        "Input tokens — model=gpt-4o (per 1000000 tokens)",
        {"model": "gpt-4o"},
        "800000",
        "2.00",
        PER_M,
        "1.60",
        None,
        False,
        None,
    ),
    (
        "input_tokens",
        "Input tokens — model=llama-local (unpriced)",
        {"model": "llama-local"},
        "5000000",
        "0.00",
        "1",
        "0.00",
        None,
        True,
        None,
    ),
    (
        "output_tokens",
        "Output tokens — model=claude-sonnet (per 1000000 tokens)",
        {"model": "claude-sonnet"},
        "400000",
        "12.00",
        PER_M,
        "4.80",
        None,
        False,
        None,
    ),
    (
        "output_tokens",
        "Output tokens — model=gpt-4o (per 1000000 tokens)",
        {"model": "gpt-4o"},
        "300000",
        "10.00",
        PER_M,
        "3.00",
        None,
        False,
        None,
    ),
    (
        "output_tokens",
        "Output tokens — model=gpt-4o, project_id=research (per 1000000 tokens)",
        {"model": "gpt-4o", "project_id": "research"},
        "200000",
        "8.00",
        PER_M,
        "1.60",
        None,
        False,
        None,
    ),
    (
        "output_tokens",
        "Output tokens — model=llama-local (unpriced)",
        {"model": "llama-local"},
        "1000000",
        "0.00",
        "1",
        "0.00",
        None,
        True,
        None,
    ),
    ("seats", "Seats", {}, "6", "8.00", "1", "48.00", None, False, None),
]
# 10.17 (API calls) + 0.93 (cache read) + 0.38 (cache write) + 12.25 (input) + 9.40 (output)
# + 48.00 (seats)
USD_TOTAL = "81.13"
EXPECTED_JPY = [("gpu_seconds", "GPU seconds", {}, "1233", "0.5", "1", "617", None, False, None)]
EXPECTED_KWD = [("sms", "SMS messages", {}, "37", "0.0125", "1", "0.463", None, False, None)]


@pytest.fixture
async def llm_tenant(client: Client, keys: Keys, record: Record) -> None:
    await build_llm_catalog(client, keys)
    assert await record("acme", llm_usage()) == len(llm_usage())
    # Another tenant's usage never shows on acme's invoices.
    await record("globex", [Usage("input_tokens", "2026-10-05T10:00:00+00:00", 10**6, "gpt-4o")])


def by_currency(invoices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    assert [i["currency"] for i in invoices] == sorted(i["currency"] for i in invoices)
    return {invoice["currency"]: invoice for invoice in invoices}


def assert_golden(invoices: list[dict[str, Any]]) -> None:
    found = by_currency(invoices)
    assert set(found) == {"JPY", "KWD", "USD"}
    usd, jpy, kwd = found["USD"], found["JPY"], found["KWD"]
    assert [brief(line) for line in usd["lines"]] == EXPECTED_USD
    assert (usd["subtotal"], usd["total"]) == (USD_TOTAL, USD_TOTAL)
    assert [brief(line) for line in jpy["lines"]] == EXPECTED_JPY
    assert (jpy["subtotal"], jpy["total"]) == ("617", "617")
    assert [brief(line) for line in kwd["lines"]] == EXPECTED_KWD
    assert (kwd["subtotal"], kwd["total"]) == ("0.463", "0.463")
    for invoice in invoices:
        assert invoice["tenant_id"] == "acme"
        assert invoice["period"] == "2026-10"
        assert (invoice["period_start"], invoice["period_end"]) == (OCT_START, OCT_END)
    [calls] = [line for line in usd["lines"] if line["meter"] == "api_calls"]
    # 100 x 0 + 900 x 0.01 = 9.00, + 234 x 0.005 = 1.17: 10.17, rounded once.
    assert [(t["tier"], t["quantity"], t["unit_amount"], t["amount"]) for t in calls["tiers"]] == [
        (1, "100", "0.00", "0.00"),
        (2, "900", "0.01", "9.00"),
        (3, "234", "0.005", "1.17"),
    ]
    assert all(line["kind"] == "usage" for invoice in invoices for line in invoice["lines"])
    # A priced line covers the part of the month its price was in effect.
    periods = {
        (line["description"], line["unit_amount"]): (line["period_start"], line["period_end"])
        for line in usd["lines"]
    }
    gpt_input = "Input tokens — model=gpt-4o (per 1000000 tokens)"
    assert periods[(gpt_input, "2.50")] == (OCT_START, PRICE_CHANGE)
    assert periods[(gpt_input, "2.00")] == (PRICE_CHANGE, OCT_END)
    assert periods[("Seats", "8.00")] == (OCT_START, OCT_END)
    assert periods[("Input tokens — model=llama-local (unpriced)", "0.00")] == (OCT_START, OCT_END)
    for invoice in invoices:
        for line in invoice["lines"]:
            assert (line["price_id"] is None) == line["unpriced"]


@pytest.mark.usefixtures("llm_tenant")
async def test_preview_shows_the_golden_drafts(client: Client, billing: dict[str, str]) -> None:
    drafts = await preview(client, billing, "acme", "2026-10")
    assert_golden(drafts)
    for draft in drafts:
        assert draft["status"] == "draft"
        assert draft["id"] is None and draft["number"] is None
        assert draft["finalized_at"] is None


@pytest.mark.usefixtures("llm_tenant")
async def test_finalize_bills_the_golden_invoices(client: Client, billing: dict[str, str]) -> None:
    drafts = await preview(client, billing, "acme", "2026-10")
    invoices = await finalized(client, billing, "acme", "2026-10")
    assert_golden(invoices)
    # Numbered per tenant in currency order, gapless.
    assert [i["number"] for i in invoices] == ["ACME-000001", "ACME-000002", "ACME-000003"]
    for invoice, draft in zip(invoices, drafts, strict=True):
        assert invoice["status"] == "finalized"
        assert invoice["finalized_at"] is not None and invoice["voided_at"] is None
        unchanged = {"id", "number", "status", "finalized_at"}
        assert {k: v for k, v in invoice.items() if k not in unchanged} == {
            k: v for k, v in draft.items() if k not in unchanged
        }
        fetched = await client.get(f"/v1/invoices/{invoice['id']}", headers=billing)
        assert fetched.status_code == 200
        assert fetched.json() == invoice


async def test_a_month_without_usage_finalizes_one_empty_invoice(
    client: Client, keys: Keys, billing: dict[str, str]
) -> None:
    await create_tenant(client, keys, "quiet", currency="EUR")
    [invoice] = await finalized(client, billing, "quiet", "2026-09")
    assert invoice["currency"] == "EUR"
    assert invoice["lines"] == []
    assert (invoice["subtotal"], invoice["total"]) == ("0.00", "0.00")
    assert invoice["number"] == "QUIET-000001"
    assert (invoice["period_start"], invoice["period_end"]) == (
        "2026-09-01T00:00:00Z",
        "2026-10-01T00:00:00Z",
    )
