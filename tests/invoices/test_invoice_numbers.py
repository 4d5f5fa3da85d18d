"""Invoice numbers are unique across the platform, not only per tenant."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.conftest import Keys
from tests.invoices.conftest import Client, create_tenant, finalized

# Two tenant ids that share their first 32 characters (the old number prefix).
SHARED = "a" * 32
LONGEST = "b" * 64


async def test_tenants_sharing_a_long_prefix_get_different_numbers(
    client: Client, keys: Keys, billing: dict[str, str]
) -> None:
    for tenant in (f"{SHARED}-east", f"{SHARED}-west", LONGEST):
        await create_tenant(client, keys, tenant)
    [east] = await finalized(client, billing, f"{SHARED}-east", "2026-10")
    [west] = await finalized(client, billing, f"{SHARED}-west", "2026-10")
    [longest] = await finalized(client, billing, LONGEST, "2026-10")
    assert east["number"] == f"{SHARED.upper()}-EAST-000001"
    assert west["number"] == f"{SHARED.upper()}-WEST-000001"
    assert longest["number"] == f"{LONGEST.upper()}-000001"


async def test_the_database_refuses_a_number_another_tenant_has(
    client: Client, keys: Keys, billing: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    await create_tenant(client, keys, "acme")
    [invoice] = await finalized(client, billing, "acme", "2026-10")
    # Refused by the prefix check: each tenant's numbers carry its own id.
    with pytest.raises(asyncpg.CheckViolationError, match="number_prefix"):
        await pg_pool.execute(
            "INSERT INTO invoices (tenant_id, id, number, status, period, period_start, "
            "period_end, currency, subtotal, total, lines, document, finalized_at) "
            "SELECT 'globex', $1, number, status, period, period_start, period_end, currency, "
            "subtotal, total, lines, document, finalized_at FROM invoices WHERE id = $2",
            uuid.uuid4(),
            uuid.UUID(invoice["id"]),
        )
