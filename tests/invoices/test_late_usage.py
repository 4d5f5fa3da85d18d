"""Late usage: events accepted after their period was finalized are billed on the next
finalized invoice as prior-period adjustment lines, tiers included; finalized invoices never
change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.invoices.repository import InvoiceSummary
from service.invoices.service import periods_to_adjust
from tests.conftest import Keys
from tests.invoices.conftest import (
    Client,
    Record,
    Usage,
    brief,
    create_meter,
    create_price,
    create_tenant,
    finalize,
    finalized,
    preview,
)
from tests.support.problems import assert_problem

TOKENS = "Tokens — model=gpt-4o (per 1000000 tokens)"
JUL = ("2026-07-01T00:00:00Z", "2026-08-01T00:00:00Z")
AUG = ("2026-08-01T00:00:00Z", "2026-09-01T00:00:00Z")


@pytest.fixture
async def catalog(client: Client, keys: Keys) -> None:
    """acme (UTC): API calls with graduated tiers (1000 free, then 0.01 up to 5000, then 0.005)
    and gpt-4o tokens at 2.00 per 1M."""
    await create_tenant(client, keys, "acme")
    await create_meter(client, keys, "api_calls", "API calls", "count")
    await create_meter(client, keys, "tokens", "Tokens", "sum", unit="tokens")
    await create_price(
        client,
        keys,
        "api_calls",
        tiers=[
            {"up_to": 1000, "unit_amount": "0"},
            {"up_to": 5000, "unit_amount": "0.01"},
            {"up_to": None, "unit_amount": "0.005"},
        ],
    )
    await create_price(
        client, keys, "tokens", unit_amount="2.00", per_units="1000000", match={"model": "gpt-4o"}
    )


def calls(day: str, count: int) -> list[Usage]:
    return [Usage("api_calls", f"{day}T{i % 24:02d}:{i % 60:02d}:00+00:00") for i in range(count)]


def tokens(ts: str, value: int) -> Usage:
    return Usage("tokens", ts, value, model="gpt-4o")


def lines_of(invoice: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [brief(line) for line in invoice["lines"]]


def calls_line(quantity: str, unit: str, amount: str, tier: int | None, adjusts: str | None) -> Any:
    """The tiered price's one line: `unit` and `tier` are the highest tier's the period reached
    (on an adjustment line: reaches now)."""
    prefix = f"Adjustment for {adjusts}: " if adjusts else ""
    return (
        "api_calls",
        f"{prefix}API calls — graduated tiers",
        {},
        quantity,
        unit,
        "1",
        amount,
        tier,
        False,
        adjusts,
    )


def tokens_line(quantity: str, amount: str, adjusts: str | None) -> Any:
    prefix = f"Adjustment for {adjusts}: " if adjusts else ""
    return (
        "tokens",
        prefix + TOKENS,
        {"model": "gpt-4o"},
        quantity,
        "2.00",
        "1000000",
        amount,
        None,
        False,
        adjusts,
    )


async def july_and_august(
    client: Client, billing: dict[str, str], record: Record
) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """July billed, late July usage, August billed with July's adjustments."""
    await record("acme", [*calls("2026-07-10", 900), tokens("2026-07-10T00:00:00+00:00", 10**6)])
    [july] = await finalized(client, billing, "acme", "2026-07")
    assert lines_of(july) == [
        calls_line("900", "0.00", "0.00", 1, None),
        tokens_line("1000000", "2.00", None),
    ]
    july_document = (await client.get(f"/v1/invoices/{july['id']}", headers=billing)).content

    # Accepted after July was finalized: 300 calls (crossing into tier 2) and 500k tokens.
    await record("acme", [*calls("2026-07-31", 300), tokens("2026-07-31T23:59:59+00:00", 500_000)])
    await record("acme", [*calls("2026-08-02", 100), tokens("2026-08-02T00:00:00+00:00", 250_000)])

    expected_august = [
        calls_line("100", "0.00", "0.00", 1, None),
        tokens_line("250000", "0.50", None),
        # July now has 1200 calls (300 more than billed): 1000 in tier 1, 200 in tier 2.
        calls_line("300", "0.01", "2.00", 2, "2026-07"),
        tokens_line("500000", "1.00", "2026-07"),
    ]
    [draft] = await preview(client, billing, "acme", "2026-08")
    assert lines_of(draft) == expected_august
    [august] = await finalized(client, billing, "acme", "2026-08")
    assert august["number"] == "ACME-000002"
    assert lines_of(august) == expected_august
    assert august["total"] == "3.50"
    # Adjustment lines cover the period they adjust.
    for line in august["lines"][2:]:
        assert (line["period_start"], line["period_end"]) == JUL
        assert line["price_id"] is not None
        assert (line["kind"], line["adjusts_kind"]) == ("adjustment", "usage")
    assert [line["kind"] for line in august["lines"][:2]] == ["usage", "usage"]
    # July's invoice is untouched.
    again = await client.get(f"/v1/invoices/{july['id']}", headers=billing)
    assert again.content == july_document
    return july, august, july_document


@pytest.mark.usefixtures("catalog")
async def test_late_usage_is_billed_on_the_next_invoice_as_adjustments(
    client: Client, billing: dict[str, str], record: Record
) -> None:
    await july_and_august(client, billing, record)
    # Late August usage: 1000 more calls, so August reaches tier 2 too.
    await record("acme", calls("2026-08-31", 1000))
    # A late July event: ingestion refuses it in reality (July's window closed before August
    # was finalized), so July is settled and it is not billed again.
    await record("acme", calls("2026-07-15", 50))
    await record("acme", calls("2026-09-03", 10))
    [september] = await finalized(client, billing, "acme", "2026-09")
    assert september["number"] == "ACME-000003"
    assert lines_of(september) == [
        calls_line("10", "0.00", "0.00", 1, None),
        # August now has 1100 calls (1000 more than billed): 100 of them in tier 2.
        calls_line("1000", "0.01", "1.00", 2, "2026-08"),
    ]
    assert (september["subtotal"], september["total"]) == ("1.00", "1.00")
    for line in september["lines"][1:]:
        assert (line["period_start"], line["period_end"]) == AUG
    # Finalizing October with nothing new late: no adjustment lines at all.
    [october] = await finalized(client, billing, "acme", "2026-10")
    assert october["lines"] == [] and october["total"] == "0.00"


@pytest.mark.usefixtures("catalog")
async def test_voided_adjustments_are_billed_again(
    client: Client, billing: dict[str, str], record: Record
) -> None:
    july, august, july_document = await july_and_august(client, billing, record)
    await record("acme", calls("2026-08-31", 1000))
    await record("acme", calls("2026-07-15", 50))
    [september] = await finalized(client, billing, "acme", "2026-09")

    # Voiding August takes back its July adjustments: July is re-rated at the next
    # finalization (late July calls included). August cannot be finalized again while
    # September bills August's late usage.
    voided = await client.post(f"/v1/invoices/{august['id']}/void", headers=billing)
    assert voided.status_code == 200, voided.text
    assert_problem(await finalize(client, billing, "acme", "2026-08"), 409, "period_adjusted_later")
    voided = await client.post(f"/v1/invoices/{september['id']}/void", headers=billing)
    assert voided.status_code == 200, voided.text

    [august_again] = await finalized(client, billing, "acme", "2026-08")
    assert august_again["number"] == "ACME-000004"
    assert lines_of(august_again) == [
        # August now: 1100 calls, 250k tokens.
        calls_line("1100", "0.01", "1.00", 2, None),
        tokens_line("250000", "0.50", None),
        # July: 1250 calls (billed: 900), 1.5M tokens (billed: 1M).
        calls_line("350", "0.01", "2.50", 2, "2026-07"),
        tokens_line("500000", "1.00", "2026-07"),
    ]
    assert august_again["total"] == "5.00"

    [september_again] = await finalized(client, billing, "acme", "2026-09")
    assert september_again["number"] == "ACME-000005"
    assert lines_of(september_again) == []
    assert (await client.get(f"/v1/invoices/{july['id']}", headers=billing)).content == (
        july_document
    )


def summary(
    period: str, finalized_at: datetime, *, voided_at: datetime | None = None, adjusts: Any = ()
) -> InvoiceSummary:
    start = datetime.fromisoformat(f"{period}-01T00:00:00+00:00")
    end = (start + timedelta(days=32)).replace(day=1)
    return InvoiceSummary(
        period=period,
        period_start=start,
        period_end=end,
        status="finalized" if voided_at is None else "void",
        finalized_at=finalized_at,
        voided_at=voided_at,
        adjusts=frozenset(adjusts),
    )


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def test_a_period_is_adjusted_until_an_invoice_after_its_window_settles_it() -> None:
    window = timedelta(days=35)
    july = summary("2026-07", at("2026-08-02"))
    # August finalized on time: July's window (until September 5) is still open.
    on_time = [july, summary("2026-08", at("2026-09-02"), adjusts={"2026-07"})]
    assert set(periods_to_adjust(on_time, before="2026-09", late_arrival=window)) == {
        "2026-07",
        "2026-08",
    }
    # August finalized late (after September 5): it billed all of July's late usage.
    late = [july, summary("2026-08", at("2026-09-10"))]
    assert set(periods_to_adjust(late, before="2026-09", late_arrival=window)) == {"2026-08"}
    # Voiding an invoice that billed July re-opens it until a later invoice settles it again.
    voided = [
        july,
        summary("2026-08", at("2026-09-10"), voided_at=at("2026-09-20"), adjusts={"2026-07"}),
        summary("2026-09", at("2026-09-15")),
    ]
    assert set(periods_to_adjust(voided, before="2026-10", late_arrival=window)) == {
        "2026-07",
        "2026-09",
    }
    settled = [*voided, summary("2026-08", at("2026-09-21"))]
    assert set(periods_to_adjust(settled, before="2026-10", late_arrival=window)) == {
        "2026-08",
        "2026-09",
    }
    # Only earlier periods, and only finalized ones.
    assert periods_to_adjust(on_time, before="2026-07", late_arrival=window) == {}
    assert periods_to_adjust([], before="2026-07", late_arrival=window) == {}
