"""All SQL of budgets outside ingestion (service.budgets.ingest adds usage there)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg
from sqlalchemy import delete, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from service.budgets.models import Budget
from service.budgets.spend import CostCell

SCOPE_COLUMNS = ("api_key_id", "user_id", "project_id", "org_id", "model")


def period_end_sql(start: str) -> str:
    """SQL for the end of the budget period starting at `start` (b: budgets, t: tenants): the
    next local midnight or 1st of the month, so 23 to 25 hours for a day across DST."""
    return (
        f"((({start} AT TIME ZONE t.timezone) + CASE b.period WHEN 'day' THEN interval '1 day' "
        "ELSE interval '1 month' END) AT TIME ZONE t.timezone)"
    )


# One row per matching budget with its total of the current period: an index range of the
# tenant's budgets and one primary-key probe of budget_usage each.
STANDING_SQL = f"""
SELECT b.id, b.name, b.limit_quantity, m.event_name, coalesce(u.used, 0) AS used,
       p.period_start, {period_end_sql("p.period_start")} AS period_end,
       b.limit_cost, b.tenant_id, b.period, t.timezone, t.currency,
       b.api_key_id, b.user_id, b.project_id, b.org_id, b.model
FROM budgets AS b
JOIN tenants AS t ON t.id = b.tenant_id
LEFT JOIN meters AS m ON m.id = b.meter_id
CROSS JOIN LATERAL (SELECT date_trunc(b.period, now(), t.timezone) AS period_start) AS p
LEFT JOIN budget_usage AS u
  ON u.tenant_id = b.tenant_id AND u.budget_id = b.id AND u.period_start = p.period_start
WHERE b.tenant_id = :tenant_id
  AND (b.api_key_id IS NULL OR b.api_key_id = :api_key_id)
  AND (b.user_id IS NULL OR b.user_id = :user_id)
  AND (b.project_id IS NULL OR b.project_id = :project_id)
  AND (b.org_id IS NULL OR b.org_id = :org_id)
  AND (b.model IS NULL OR b.model = :model)
ORDER BY b.created_at, b.id
"""


@dataclass(frozen=True, slots=True)
class Standing:
    """A budget in its current period: a quantity budget's `used` is its total; a cost
    budget's (limit_cost set) is priced from its cells by the caller."""

    id: uuid.UUID
    name: str
    limit_quantity: Decimal | None
    meter: str | None
    used: Decimal
    period_start: datetime
    period_end: datetime
    limit_cost: Decimal | None
    tenant_id: str
    period: str
    timezone: str
    currency: str
    api_key_id: str | None
    user_id: str | None
    project_id: str | None
    org_id: str | None
    model: str | None

    def cost_budget(self) -> CostBudget:
        assert self.limit_cost is not None
        return CostBudget(
            tenant_id=self.tenant_id,
            id=self.id,
            period=self.period,
            limit_cost=self.limit_cost,
            scope={
                name: value for name in SCOPE_COLUMNS if (value := getattr(self, name)) is not None
            },
            timezone=self.timezone,
            currency=self.currency,
            period_end=self.period_end,
        )


class BudgetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, budget: Budget) -> Budget:
        self.session.add(budget)
        await self.session.flush()
        await self.session.refresh(budget)
        return budget

    async def get(self, budget_id: uuid.UUID) -> Budget | None:
        return (
            await self.session.scalars(select(Budget).where(Budget.id == budget_id))
        ).one_or_none()

    async def list_after(
        self, tenant_id: str | None, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> Sequence[Budget]:
        query = select(Budget).order_by(Budget.created_at, Budget.id).limit(limit)
        if tenant_id is not None:
            query = query.where(Budget.tenant_id == tenant_id)
        if after is not None:
            query = query.where(tuple_(Budget.created_at, Budget.id) > tuple_(*after))
        return (await self.session.scalars(query)).all()

    async def delete(self, tenant_id: str, budget_id: uuid.UUID) -> None:
        await self.session.execute(
            delete(Budget).where(Budget.tenant_id == tenant_id, Budget.id == budget_id)
        )

    async def standing(self, tenant_id: str, attribution: dict[str, str | None]) -> list[Standing]:
        rows = await self.session.execute(
            text(STANDING_SQL), {"tenant_id": tenant_id, **attribution}
        )
        return [Standing(*row) for row in rows]


# A cost budget's cells in one period (service.budgets.spend prices them).
COST_CELLS_SQL = """
SELECT meter_id, org_id, project_id, api_key_id, user_id, model, dimensions::text AS dimensions,
       sum, count, first_ts, last_ts
FROM budget_cost_cells
WHERE tenant_id = $1 AND budget_id = $2 AND period_start = $3
"""


async def cost_cells(
    connection: asyncpg.Connection, tenant_id: str, budget_id: uuid.UUID, period_start: datetime
) -> list[CostCell]:
    cells = []
    for row in await connection.fetch(COST_CELLS_SQL, tenant_id, budget_id, period_start):
        attributes: dict[str, str | None] = json.loads(row["dimensions"])
        for name in ("org_id", "project_id", "api_key_id", "user_id", "model"):
            attributes[name] = row[name] or None  # '' is absent, as in rollups
        cells.append(
            CostCell(
                meter_id=row["meter_id"],
                attributes=attributes,
                sum=row["sum"],
                count=row["count"],
                first_ts=row["first_ts"],
                last_ts=row["last_ts"],
            )
        )
    return cells


# The budget's running row of the period, locked to the end of the transaction: statements
# recording a cost budget's thresholds take it in turn (so the later one sees the earlier
# one's usage). `used` keeps the spend last computed, for information.
LOCK_COST_PERIOD_SQL = """
INSERT INTO budget_usage AS u (tenant_id, budget_id, period_start, used)
VALUES ($1, $2, $3, 0)
ON CONFLICT (tenant_id, budget_id, period_start) DO UPDATE SET used = u.used
"""
SET_COST_USED_SQL = """
UPDATE budget_usage SET used = $4::numeric
WHERE tenant_id = $1 AND budget_id = $2 AND period_start = $3
"""
# The thresholds `used` has reached, each recorded once (the key); those new to this call.
COST_ALERTS_SQL = """
INSERT INTO budget_alerts AS a (tenant_id, budget_id, period_start, threshold_percent, used)
SELECT b.tenant_id, b.id, $3::timestamptz, p.threshold, $4::numeric
FROM budgets AS b CROSS JOIN LATERAL unnest(b.thresholds_percent) AS p(threshold)
WHERE b.tenant_id = $1 AND b.id = $2 AND $4::numeric * 100 >= b.limit_cost * p.threshold
ORDER BY p.threshold
ON CONFLICT DO NOTHING
RETURNING a.threshold_percent
"""
# What pricing a cost budget's period needs to know of it.
COST_BUDGET_SQL = f"""
SELECT b.tenant_id, b.id, b.period, b.limit_cost, b.api_key_id, b.user_id, b.project_id,
       b.org_id, b.model, t.timezone, t.currency, {period_end_sql("$3::timestamptz")} AS period_end
FROM budgets AS b JOIN tenants AS t ON t.id = b.tenant_id
WHERE b.tenant_id = $1 AND b.id = $2 AND b.limit_cost IS NOT NULL
"""


@dataclass(frozen=True, slots=True)
class CostBudget:
    tenant_id: str
    id: uuid.UUID
    period: str
    limit_cost: Decimal
    scope: dict[str, str]
    timezone: str
    currency: str
    period_end: datetime


async def cost_budget(
    connection: asyncpg.Connection, tenant_id: str, budget_id: uuid.UUID, period_start: datetime
) -> CostBudget | None:
    row = await connection.fetchrow(COST_BUDGET_SQL, tenant_id, budget_id, period_start)
    if row is None:
        return None
    return CostBudget(
        tenant_id=row["tenant_id"],
        id=row["id"],
        period=row["period"],
        limit_cost=row["limit_cost"],
        scope={name: row[name] for name in SCOPE_COLUMNS if row[name] is not None},
        timezone=row["timezone"],
        currency=row["currency"],
        period_end=row["period_end"],
    )


async def lock_cost_period(
    connection: asyncpg.Connection, tenant_id: str, budget_id: uuid.UUID, period_start: datetime
) -> None:
    await connection.execute(LOCK_COST_PERIOD_SQL, tenant_id, budget_id, period_start)


async def record_cost_alerts(
    connection: asyncpg.Connection,
    tenant_id: str,
    budget_id: uuid.UUID,
    period_start: datetime,
    used: Decimal,
) -> list[int]:
    """Store `used` on the period's row and record the thresholds it reached; the thresholds
    recorded by this call (none already recorded)."""
    await connection.execute(SET_COST_USED_SQL, tenant_id, budget_id, period_start, used)
    rows = await connection.fetch(COST_ALERTS_SQL, tenant_id, budget_id, period_start, used)
    return [row["threshold_percent"] for row in rows]
