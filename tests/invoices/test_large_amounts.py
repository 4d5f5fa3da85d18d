"""The largest amounts the API accepts bill exactly: never a 500, never a blocked tenant."""

from __future__ import annotations

from decimal import Decimal

from tests.conftest import Keys
from tests.invoices.conftest import (
    Client,
    Record,
    Usage,
    create_meter,
    create_price,
    create_tenant,
    finalized,
    preview,
)

UNIT_AMOUNT = "99999999999999999999"  # just under the 10**20 ceiling
PER_UNITS = "0.000000000001"  # the smallest: 12 decimal places
EVENT = "9999999999999999999999999999"  # just under the 10**28 ceiling of an event value


async def test_preview_and_finalize_bill_the_largest_accepted_amounts(
    client: Client, keys: Keys, billing: dict[str, str], record: Record
) -> None:
    await create_tenant(client, keys, "acme")
    await create_meter(client, keys, "tokens", "Tokens", "sum", unit="tokens")
    await create_price(client, keys, "tokens", unit_amount=UNIT_AMOUNT, per_units=PER_UNITS)
    await record(
        "acme", [Usage("tokens", f"2026-10-0{day}T00:00:00+00:00", EVENT) for day in range(1, 6)]
    )
    quantity = 5 * int(EVENT)
    expected = f"{quantity * int(UNIT_AMOUNT) * 10**12}.00"
    [draft] = await preview(client, billing, "acme", "2026-10")
    [invoice] = await finalized(client, billing, "acme", "2026-10")
    for document in (draft, invoice):
        [line] = document["lines"]
        assert line["quantity"] == str(quantity)
        assert line["amount"] == document["subtotal"] == document["total"] == expected
    assert Decimal(expected) > 10**60
    fetched = await client.get(f"/v1/invoices/{invoice['id']}", headers=billing)
    assert fetched.status_code == 200 and fetched.json()["total"] == expected
