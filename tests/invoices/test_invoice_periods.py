"""Which instants an invoice covers: the requested month in the tenant's time zone, checked in
one place for preview and finalize, and chained to the neighbouring finalized invoices so that
a time zone change can neither bill usage twice nor leave it unbilled."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from service.common.errors import InvalidInput
from service.invoices.errors import PeriodOverlaps
from service.invoices.repository import InvoiceSummary
from service.invoices.service import invoice_bounds, invoice_period
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

LATE_OCTOBER = "2026-10-31T15:00:00+00:00"  # Oct 31 in Los Angeles, Nov 1 in Kiritimati
LOS_ANGELES, KIRITIMATI = "America/Los_Angeles", "Pacific/Kiritimati"


async def tenant_with_tokens(client: Client, keys: Keys, record: Record, timezone: str) -> None:
    """acme in `timezone`, tokens at 2.50 per 1M, 1M tokens at LATE_OCTOBER and 2M mid-November."""
    await create_tenant(client, keys, "acme", timezone=timezone)
    await create_meter(client, keys, "tokens", "Tokens", "sum", unit="tokens")
    await create_price(client, keys, "tokens", unit_amount="2.50", per_units="1000000")
    await record(
        "acme",
        [
            Usage("tokens", LATE_OCTOBER, 1_000_000),
            Usage("tokens", "2026-11-15T12:00:00+00:00", 2_000_000),
        ],
    )


async def move(client: Client, keys: Keys, timezone: str) -> None:
    response = await client.patch(
        "/v1/tenants/acme", json={"timezone": timezone}, headers=keys.admin
    )
    assert response.status_code == 200, response.text


def bounds(invoice: dict[str, Any]) -> tuple[str, str]:
    return invoice["period_start"], invoice["period_end"]


async def test_zone_moved_east_after_finalizing_bills_nothing_twice(
    client: Client, keys: Keys, billing: dict[str, str], record: Record
) -> None:
    await tenant_with_tokens(client, keys, record, LOS_ANGELES)
    [october] = await finalized(client, billing, "acme", "2026-10")
    assert bounds(october) == ("2026-10-01T07:00:00Z", "2026-11-01T07:00:00Z")
    assert october["total"] == "2.50"

    await move(client, keys, KIRITIMATI)  # November in Kiritimati starts 2026-10-31T10:00Z
    [draft] = await preview(client, billing, "acme", "2026-11")
    [november] = await finalized(client, billing, "acme", "2026-11")
    # November starts where October ended and ends with November in Kiritimati.
    assert bounds(draft) == bounds(november) == ("2026-11-01T07:00:00Z", "2026-11-30T10:00:00Z")
    assert november["total"] == "5.00"  # the 2M of mid-November only


async def test_zone_moved_west_after_finalizing_leaves_nothing_unbilled(
    client: Client, keys: Keys, billing: dict[str, str], record: Record
) -> None:
    await tenant_with_tokens(client, keys, record, KIRITIMATI)
    [october] = await finalized(client, billing, "acme", "2026-10")
    assert bounds(october) == ("2026-09-30T10:00:00Z", "2026-10-31T10:00:00Z")
    assert october["total"] == "0.00"  # LATE_OCTOBER is November in Kiritimati

    await move(client, keys, LOS_ANGELES)  # November in Los Angeles starts 2026-11-01T07:00Z
    [draft] = await preview(client, billing, "acme", "2026-11")
    [november] = await finalized(client, billing, "acme", "2026-11")
    assert bounds(draft) == bounds(november) == ("2026-10-31T10:00:00Z", "2026-12-01T08:00:00Z")
    assert november["total"] == "7.50"  # LATE_OCTOBER's 1M and mid-November's 2M


async def test_a_period_finalized_later_fills_the_gap_between_its_neighbours(
    client: Client, keys: Keys, billing: dict[str, str], record: Record
) -> None:
    """November finalized first (Los Angeles), October later after a move to Kiritimati:
    October ends where November starts, so LATE_OCTOBER is billed once, by October."""
    await tenant_with_tokens(client, keys, record, LOS_ANGELES)
    [november] = await finalized(client, billing, "acme", "2026-11")
    assert bounds(november) == ("2026-11-01T07:00:00Z", "2026-12-01T08:00:00Z")
    await move(client, keys, KIRITIMATI)
    [october] = await finalized(client, billing, "acme", "2026-10")
    assert bounds(october) == ("2026-09-30T10:00:00Z", "2026-11-01T07:00:00Z")
    assert (october["total"], november["total"]) == ("2.50", "5.00")


def summary(period: str, start: str, end: str, status: str = "finalized") -> InvoiceSummary:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    return InvoiceSummary(
        period=period,
        period_start=datetime.fromisoformat(start),
        period_end=datetime.fromisoformat(end),
        status=status,
        finalized_at=at,
        voided_at=at if status == "void" else None,
        adjusts=frozenset(),
    )


def test_bounds_follow_the_neighbours_and_ignore_void_invoices() -> None:
    september = summary("2026-09", "2026-09-01T00:00:00Z", "2026-10-01T03:00:00Z")
    november = summary("2026-11", "2026-10-31T22:00:00Z", "2026-12-01T00:00:00Z")
    void = summary("2026-09", "2026-09-01T00:00:00Z", "2026-10-02T00:00:00Z", status="void")
    assert invoice_bounds("2026-10", "UTC", [void]) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    )
    assert invoice_bounds("2026-10", "UTC", [september, void, november]) == (
        datetime(2026, 10, 1, 3, tzinfo=UTC),
        datetime(2026, 10, 31, 22, tzinfo=UTC),
    )
    # A period that is finalized keeps its own instants.
    assert invoice_bounds("2026-09", "Asia/Tokyo", [september]) == (
        september.period_start,
        september.period_end,
    )


def test_bounds_that_would_overlap_a_finalized_invoice_are_refused() -> None:
    # Stored instants no month in any zone could produce; the check still holds.
    wide = summary("2026-12", "2026-10-20T00:00:00Z", "2027-01-01T00:00:00Z")
    with pytest.raises(PeriodOverlaps):
        invoice_bounds("2026-10", "UTC", [wide])
    ahead = summary("2026-11", "2026-09-15T00:00:00Z", "2026-12-01T00:00:00Z")
    with pytest.raises(PeriodOverlaps):
        invoice_bounds("2026-10", "UTC", [ahead])


@pytest.mark.parametrize("period", ["0001-01", "1999-12", "9000-01", "9999-12", "2026-13", "26-1"])
def test_periods_out_of_range_or_malformed_are_invalid(period: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        invoice_period(period, "UTC")
    assert [error.field for error in raised.value.errors or []] == ["period"]


def test_a_month_whose_instants_leave_the_range_in_the_zone_is_invalid() -> None:
    assert invoice_period("2000-01", "America/Los_Angeles")[0] == datetime(
        2000, 1, 1, 8, tzinfo=UTC
    )
    with pytest.raises(InvalidInput):
        invoice_period("2000-01", KIRITIMATI)  # starts 1999-12-31T10:00Z


@pytest.mark.parametrize("period", ["0001-01", "1999-12", "9999-12"])
async def test_preview_and_finalize_refuse_the_same_periods(
    client: Client, keys: Keys, billing: dict[str, str], pg_pool: asyncpg.Pool, period: str
) -> None:
    await create_tenant(client, keys, "acme")
    await create_tenant(client, keys, "east", timezone="Asia/Tokyo")
    for tenant in ("acme", "east"):
        response = await client.get(
            f"/v1/tenants/{tenant}/invoices/preview", params={"period": period}, headers=billing
        )
        assert_problem(response, 422, "validation_error", "period")
        assert_problem(
            await finalize(client, billing, tenant, period), 422, "validation_error", "period"
        )
    assert await pg_pool.fetchval("SELECT count(*) FROM invoices") == 0
    [invoice] = await finalized(client, billing, "acme", "2026-10")
    assert invoice["number"].endswith("-000001")  # no number was used up
