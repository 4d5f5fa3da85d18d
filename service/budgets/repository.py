"""All SQL of budgets outside ingestion (service.budgets.ingest adds usage there)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import delete, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from service.budgets.models import Budget


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
       p.period_start, {period_end_sql("p.period_start")} AS period_end
FROM budgets AS b
JOIN tenants AS t ON t.id = b.tenant_id
JOIN meters AS m ON m.id = b.meter_id
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
    id: uuid.UUID
    name: str
    limit_quantity: Decimal
    meter: str
    used: Decimal
    period_start: datetime
    period_end: datetime


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
