"""All SQL of budgets outside ingestion (service.budgets.ingest adds usage there)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg
from sqlalchemy import delete, select, tuple_
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
WHERE b.tenant_id = $1
  AND (b.api_key_id IS NULL OR b.api_key_id = $2)
  AND (b.user_id IS NULL OR b.user_id = $3)
  AND (b.project_id IS NULL OR b.project_id = $4)
  AND (b.org_id IS NULL OR b.org_id = $5)
  AND (b.model IS NULL OR b.model = $6)
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
            period_start=self.period_start,
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


async def standing(
    connection: asyncpg.Connection, tenant_id: str, attribution: dict[str, str | None]
) -> list[Standing]:
    """The tenant's budgets whose scope `attribution` matches, each in its current period with
    its running total (STANDING_SQL): one statement."""
    rows = await connection.fetch(
        STANDING_SQL,
        tenant_id,
        *(attribution[key] for key in ("api_key_id", "user_id", "project_id", "org_id", "model")),
    )
    return [Standing(*row) for row in rows]


# Cost budgets' cells in given periods (service.budgets.spend prices them).
COST_CELLS_SQL = """
SELECT c.budget_id, c.period_start, c.meter_id, c.org_id, c.project_id, c.api_key_id,
       c.user_id, c.model, c.dimensions::text AS dimensions, c.price_keys, c.sum, c.count,
       c.first_ts, c.last_ts
FROM unnest($2::uuid[], $3::timestamptz[]) AS v(budget_id, period_start)
JOIN budget_cost_cells AS c
  ON c.tenant_id = $1 AND c.budget_id = v.budget_id AND c.period_start = v.period_start
"""

Period = tuple[uuid.UUID, datetime]  # a budget and the start of one of its periods


def _unzip(periods: Sequence[Period]) -> tuple[list[uuid.UUID], list[datetime]]:
    return [budget_id for budget_id, _ in periods], [start for _, start in periods]


async def cost_cells(
    connection: asyncpg.Connection, tenant_id: str, periods: Sequence[Period]
) -> dict[Period, list[CostCell]]:
    """The cells of each of `periods` of `tenant_id`'s cost budgets, in one statement."""
    cells: dict[Period, list[CostCell]] = {}
    for row in await connection.fetch(COST_CELLS_SQL, tenant_id, *_unzip(periods)):
        attributes: dict[str, str | None] = json.loads(row["dimensions"])
        for name in ("org_id", "project_id", "api_key_id", "user_id", "model"):
            attributes[name] = row[name] or None  # '' is absent, as in rollups
        cells.setdefault((row["budget_id"], row["period_start"]), []).append(
            CostCell(
                meter_id=row["meter_id"],
                attributes=attributes,
                kept=frozenset(row["price_keys"]),
                sum=row["sum"],
                count=row["count"],
                first_ts=row["first_ts"],
                last_ts=row["last_ts"],
            )
        )
    return cells


# The budgets' running rows of the periods, locked to the end of the transaction (in key
# order): statements recording a cost budget's thresholds take them in turn, so the later one
# sees the earlier one's usage. `used` keeps the spend last computed, for information.
LOCK_COST_PERIODS_SQL = """
INSERT INTO budget_usage AS u (tenant_id, budget_id, period_start, used)
SELECT $1, v.budget_id, v.period_start, 0
FROM unnest($2::uuid[], $3::timestamptz[]) AS v(budget_id, period_start)
ORDER BY v.budget_id, v.period_start
ON CONFLICT (tenant_id, budget_id, period_start) DO UPDATE SET used = u.used
"""
SET_COST_USED_SQL = """
UPDATE budget_usage AS u SET used = v.used
FROM unnest($2::uuid[], $3::timestamptz[], $4::numeric[]) AS v(budget_id, period_start, used)
WHERE u.tenant_id = $1 AND u.budget_id = v.budget_id AND u.period_start = v.period_start
"""
# The thresholds each spend has reached, each recorded once (the key); those new to this call.
COST_ALERTS_SQL = """
INSERT INTO budget_alerts AS a (tenant_id, budget_id, period_start, threshold_percent, used)
SELECT b.tenant_id, b.id, v.period_start, p.threshold, v.used
FROM unnest($2::uuid[], $3::timestamptz[], $4::numeric[]) AS v(budget_id, period_start, used)
JOIN budgets AS b ON b.tenant_id = $1 AND b.id = v.budget_id
CROSS JOIN LATERAL unnest(b.thresholds_percent) AS p(threshold)
WHERE v.used * 100 >= b.limit_cost * p.threshold
ORDER BY 1, 2, 3, 4
ON CONFLICT DO NOTHING
RETURNING a.budget_id, a.period_start, a.threshold_percent
"""
# What pricing cost budgets' periods needs to know of them (deleted ones are left out).
COST_BUDGETS_SQL = f"""
SELECT b.tenant_id, b.id, b.period, b.limit_cost, b.api_key_id, b.user_id, b.project_id,
       b.org_id, b.model, t.timezone, t.currency, v.period_start,
       {period_end_sql("v.period_start")} AS period_end
FROM unnest($2::uuid[], $3::timestamptz[]) AS v(budget_id, period_start)
JOIN budgets AS b ON b.tenant_id = $1 AND b.id = v.budget_id AND b.limit_cost IS NOT NULL
JOIN tenants AS t ON t.id = b.tenant_id
ORDER BY b.id, v.period_start
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
    period_start: datetime
    period_end: datetime


async def cost_budgets(
    connection: asyncpg.Connection, tenant_id: str, periods: Sequence[Period]
) -> list[CostBudget]:
    return [
        CostBudget(
            tenant_id=row["tenant_id"],
            id=row["id"],
            period=row["period"],
            limit_cost=row["limit_cost"],
            scope={name: row[name] for name in SCOPE_COLUMNS if row[name] is not None},
            timezone=row["timezone"],
            currency=row["currency"],
            period_start=row["period_start"],
            period_end=row["period_end"],
        )
        for row in await connection.fetch(COST_BUDGETS_SQL, tenant_id, *_unzip(periods))
    ]


async def lock_cost_periods(
    connection: asyncpg.Connection, tenant_id: str, periods: Sequence[Period]
) -> None:
    await connection.execute(LOCK_COST_PERIODS_SQL, tenant_id, *_unzip(periods))


async def record_cost_alerts(
    connection: asyncpg.Connection, tenant_id: str, spends: Sequence[tuple[Period, Decimal]]
) -> list[tuple[uuid.UUID, datetime, int]]:
    """Store each spend on its period's row and record the thresholds it reached; the
    (budget, period start, threshold) recorded by this call (none recorded before)."""
    budget_ids, starts = _unzip([period for period, _ in spends])
    used = [spend for _, spend in spends]
    await connection.execute(SET_COST_USED_SQL, tenant_id, budget_ids, starts, used)
    rows = await connection.fetch(COST_ALERTS_SQL, tenant_id, budget_ids, starts, used)
    return [(row["budget_id"], row["period_start"], row["threshold_percent"]) for row in rows]
