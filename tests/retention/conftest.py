"""Retention test data, written with plain SQL (tenants, raw events, rollups, invoices), so these
tests depend on the schema only, not on the ingestion API."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

EVENT_COLUMNS = ["tenant_id", "meter_id", "idempotency_key", "payload_hash", "value", "ts", "model"]


@dataclass
class RetentionData:
    pool: asyncpg.Pool
    now: datetime

    async def tenant(self, tenant_id: str, retention_days: int | None = None) -> None:
        await self.pool.execute(
            "INSERT INTO tenants (id, name, currency, timezone, retention_days) "
            "VALUES ($1, $1, 'USD', 'UTC', $2)",
            tenant_id,
            retention_days,
        )

    def days_ago(self, days: float) -> datetime:
        return self.now - timedelta(days=days)

    async def events(
        self, tenant_id: str, timestamps: Iterable[datetime], meter_id: int = 1
    ) -> int:
        """Raw events at the given event times; returns how many."""
        records = [
            (
                tenant_id,
                meter_id,
                f"key-{uuid.uuid4().hex}",
                hashlib.sha256(str(index).encode()).digest(),
                Decimal(index % 7),
                ts,
                "gpt-4o",
            )
            for index, ts in enumerate(timestamps)
        ]
        async with self.pool.acquire() as connection:
            await connection.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
        return len(records)

    async def aged_events(self, tenant_id: str, *ages_days: float) -> int:
        return await self.events(tenant_id, (self.days_ago(age) for age in ages_days))

    async def count(self, tenant_id: str | None = None, before: datetime | None = None) -> int:
        count = await self.pool.fetchval(
            "SELECT count(*) FROM events WHERE ($1::text IS NULL OR tenant_id = $1) "
            "AND ($2::timestamptz IS NULL OR ts < $2)",
            tenant_id,
            before,
        )
        return int(count)

    async def rollups(self, tenant_id: str, meter_id: int, ages_days: Iterable[float]) -> None:
        """One 15-minute rollup bucket per age, as ingestion would have written it."""
        for index, age in enumerate(ages_days):
            bucket = self.days_ago(age).replace(second=0, microsecond=0)
            bucket -= timedelta(minutes=bucket.minute % 15)
            await self.pool.execute(
                "INSERT INTO rollup_rows (tenant_id, meter_ids, bucket_start, org_id, project_id, "
                "api_key_id, user_id, model, dimensions, sums, count, last_values, last_ts, "
                "last_event_id) VALUES ($1, ARRAY[$2::int], $3, 'org', '', '', '', 'gpt-4o', "
                "'{}', ARRAY[$4::numeric], $5, ARRAY[$6::numeric], $3, $5)",
                tenant_id,
                meter_id,
                bucket,
                Decimal(index * 10) + Decimal("0.5"),
                index + 1,
                Decimal(index),
            )

    async def invoice(self, tenant_id: str, period: str, total: Decimal) -> None:
        start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
        lines = [{"meter": "tokens", "quantity": "1000", "amount": str(total)}]
        await self.pool.execute(
            "INSERT INTO invoices (tenant_id, id, number, status, period, period_start, "
            "period_end, currency, subtotal, total, lines, document, finalized_at) VALUES "
            "($1, $2, $3, 'finalized', $4, $5, $6, 'USD', $7, $7, $8::jsonb, $9, now())",
            tenant_id,
            uuid.uuid4(),
            f"{tenant_id.upper()}-{period}",
            period,
            start,
            start + timedelta(days=28),
            total,
            json.dumps(lines),
            json.dumps({"lines": lines}),
        )

    async def untouched_tables(self) -> dict[str, Any]:
        """Everything retention must never change: sum and count per tenant and meter in the
        rollups, and every row of every table but `events` (rollups, invoices, and any table
        added later)."""
        tables = await self.pool.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename NOT IN ('events', 'alembic_version') ORDER BY tablename"
        )
        snapshot: dict[str, Any] = {
            "rollup totals": [
                tuple(row)
                for row in await self.pool.fetch(
                    "SELECT tenant_id, meter_id, sum(sum), sum(count) FROM rollups "
                    "GROUP BY tenant_id, meter_id ORDER BY tenant_id, meter_id"
                )
            ]
        }
        for (table,) in tables:
            rows = await self.pool.fetch(f'SELECT * FROM "{table}" AS t ORDER BY t::text')
            snapshot[table] = [tuple(row) for row in rows]
        return snapshot


@pytest.fixture
def data(pg_pool: asyncpg.Pool) -> RetentionData:
    return RetentionData(pg_pool, datetime.now(UTC))
