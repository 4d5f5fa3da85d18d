"""Client and AsyncClient against a real server: usage, invoices (preview, finalize, list, CSV,
void) with typed answers, and errors as MeteringError with the problem's code and fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from metering_client import AsyncClient, Client, Invoice, MeteringError, Tracker
from tests.clients.conftest import Setup
from tests.support.live_server import free_port


def last_month() -> tuple[datetime, datetime, str]:
    """[start, end) of last month in UTC, and its `YYYY-MM`; late events are accepted for
    35 days, so its last hours take events now."""
    end = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (end - timedelta(days=1)).replace(day=1)
    return start, end, f"{start:%Y-%m}"


@pytest.fixture
def billed(setup: Setup) -> Setup:
    """A price of 0.50 per call, and 2 + 3 + 5 calls by two users in last month's last hour."""
    start, end, _ = last_month()
    answer = httpx.post(
        f"{setup.base_url}/v1/prices",
        json={
            "meter": "api_calls",
            "unit_amount": "0.50",
            "per_units": "1",
            "effective_from": start.isoformat(),
        },
        headers={"Authorization": f"Bearer {setup.admin_key}"},
    )
    assert answer.status_code == 201, answer.text
    with Tracker(setup.base_url, setup.ingest_key, tenant_id="acme") as tracker:
        for value, user in ((2, "ann"), (3, "bob"), (5, "ann")):
            tracker.record("api_calls", value, user_id=user, timestamp=end - timedelta(minutes=30))
    assert tracker.stats.sent == 3
    return setup


def test_usage_is_typed_and_exact(billed: Setup) -> None:
    start, end, _ = last_month()
    with Client(billed.base_url, billed.read_key) as client:
        usage = client.usage(
            "api_calls", tenant_id="acme", start=start, end=end, group_by=["user_id"]
        )
        by_user = {row.group["user_id"]: row.sum for row in usage.rows}
        assert by_user == {"ann": Decimal(7), "bob": Decimal(3)}
        assert (usage.meter, usage.aggregation, usage.from_) == ("api_calls", "sum", start)
        only_bob = client.usage(
            "api_calls", tenant_id="acme", start=start, end=end, filters={"user_id": "bob"}
        )
        assert [row.sum for row in only_bob.rows] == [Decimal(3)]
        every_meter = client.usage_by_meter(tenant_id="acme", start=start, end=end)
        sums = {
            meter.meter: sum(row.sum or 0 for row in meter.rows) for meter in every_meter.meters
        }
        assert sums["api_calls"] == Decimal(10)


def test_invoices_preview_finalize_list_csv_and_void(billed: Setup) -> None:
    _, _, period = last_month()
    with Client(billed.base_url, billed.billing_key) as client:
        [draft] = client.invoice_preview("acme", period)
        assert (draft.status, draft.id, draft.total, draft.currency) == (
            "draft",
            None,
            Decimal("5.00"),
            "USD",
        )
        [invoice] = client.finalize_invoices("acme", period)
        assert invoice.status == "finalized" and invoice.id and invoice.number
        assert invoice.total == Decimal("5.00")
        with pytest.raises(MeteringError) as again:
            client.finalize_invoices("acme", period)
        assert again.value.status == 409 and again.value.code == "invoice_exists"
        page = client.invoices(tenant_id="acme")
        assert [item.id for item in page.items] == [invoice.id]
        assert [item.id for item in client.iter_invoices(tenant_id="acme")] == [invoice.id]
        assert client.invoice(invoice.id) == invoice
        csv = client.invoice_csv(invoice.id)
        assert "5.00" in csv and invoice.number in csv
        voided = client.void_invoice(invoice.id)
        assert isinstance(voided, Invoice) and voided.status == "void"


def test_errors_carry_the_problem_code_and_fields(setup: Setup) -> None:
    with Client(setup.base_url, setup.read_key) as client:
        with pytest.raises(MeteringError) as invalid:
            client.usage(
                "api_calls",
                tenant_id="acme",
                start="2026-01-01T00:00:00Z",
                end="2026-01-02T00:00:00Z",
                group_by=["no_such_field"],
            )
        assert invalid.value.status == 422
        assert invalid.value.code == "validation_error"
        assert invalid.value.errors and invalid.value.errors[0].field
    with Client(setup.base_url, "not-a-key") as client, pytest.raises(MeteringError) as denied:
        client.invoices()
    assert (denied.value.status, denied.value.code) == (401, "unauthorized")
    with (
        Client(f"http://127.0.0.1:{free_port()}", setup.read_key) as client,
        pytest.raises(MeteringError) as nowhere,
    ):
        client.invoices()
    assert (nowhere.value.status, nowhere.value.code) == (None, "unreachable")


async def test_the_async_client_answers_the_same(billed: Setup) -> None:
    start, end, period = last_month()
    async with AsyncClient(billed.base_url, billed.billing_key) as client:
        usage = await client.usage("api_calls", tenant_id="acme", start=start, end=end)
        assert sum(row.sum or 0 for row in usage.rows) == Decimal(10)
        [draft] = await client.invoice_preview("acme", period)
        assert draft.total == Decimal("5.00")
        with pytest.raises(MeteringError) as missing:
            await client.invoice("00000000-0000-0000-0000-000000000001")
        assert (missing.value.status, missing.value.code) == (404, "not_found")
