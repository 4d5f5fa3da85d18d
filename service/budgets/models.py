"""Budgets and their running totals. A budget caps one meter's quantity, or the tenant's spend
(its cost, as GET /v1/costs computes it), per calendar day or month of its tenant's zone,
optionally narrowed to an attribution (api key, user, project, org, model). Ingestion adds
accepted usage to the budget's row of the event's period (a cost budget: to its cells, one per
meter and attribution) in the statement that stores the events (service.budgets.ingest), so a
check reads a few rows per budget and sees every acknowledged event."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base


class Budget(Base):
    __tablename__ = "budgets"
    __table_args__ = (
        CheckConstraint("period IN ('day', 'month')", name="period"),
        CheckConstraint("aggregation IN ('sum', 'count')", name="aggregation"),
        CheckConstraint("limit_quantity > 0", name="limit_quantity"),
        CheckConstraint("limit_cost > 0", name="limit_cost"),
        # A quantity budget has a meter, its aggregation and a quantity; a cost budget a cost.
        CheckConstraint(
            "(limit_cost IS NULL) = "
            "(meter_id IS NOT NULL AND aggregation IS NOT NULL AND limit_quantity IS NOT NULL)",
            name="one_limit",
        ),
        # Ingestion looks budgets up by tenant and meter for every statement.
        Index("ix_budgets_tenant_id_meter_id", "tenant_id", "meter_id"),
        # ... and a tenant's cost budgets (which count every billable meter).
        Index(
            "ix_budgets_tenant_id_cost",
            "tenant_id",
            postgresql_where=text("limit_cost IS NOT NULL"),
        ),
        Index("ix_budgets_id", "id"),
    )

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    period: Mapped[str] = mapped_column(String(8))
    # A quantity budget's meter, and its aggregation when the budget was made (a count budget
    # counts events); both null for a cost budget.
    meter_id: Mapped[int | None] = mapped_column(ForeignKey("meters.id"))
    aggregation: Mapped[str | None] = mapped_column(String(8))
    limit_quantity: Mapped[Decimal | None] = mapped_column(Numeric)
    # A cost budget's limit, in the tenant's currency.
    limit_cost: Mapped[Decimal | None] = mapped_column(Numeric)
    api_key_id: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255))
    project_id: Mapped[str | None] = mapped_column(String(255))
    org_id: Mapped[str | None] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255))
    thresholds_percent: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    # Usage accepted from this instant on counts (timestamped in this period or later).
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class BudgetUsage(Base):
    """A budget's running total in one period (the tenant's local day or month)."""

    __tablename__ = "budget_usage"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "budget_id"], ["budgets.tenant_id", "budgets.id"], ondelete="CASCADE"
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    budget_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    used: Mapped[Decimal] = mapped_column(Numeric)


class BudgetCostCell(Base):
    """A cost budget's running usage in one period, per meter and the values of the attributes
    (attribution fields, dimensions) that its tenant's prices matched on when the usage was
    accepted (`price_keys`; the others are '' or left out): rated with the tenant's prices
    when read, so a price change applies to it as it does to GET /v1/costs, unless a price now
    matches on a key the cell did not keep (the reader then prices the period from the rollup
    store). `first_ts` and `last_ts` bound its events' times, so a reader knows whether a price
    starting or ending in the period splits it. Absent values are '' (as in rollups), so the
    key can be a primary key."""

    __tablename__ = "budget_cost_cells"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "budget_id"], ["budgets.tenant_id", "budgets.id"], ondelete="CASCADE"
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    budget_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    meter_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    dimensions: Mapped[dict[str, str]] = mapped_column(JSONB, primary_key=True)
    price_keys: Mapped[list[str]] = mapped_column(ARRAY(Text), primary_key=True)
    sum: Mapped[Decimal] = mapped_column(Numeric)
    count: Mapped[int] = mapped_column(BigInteger)
    first_ts: Mapped[datetime]
    last_ts: Mapped[datetime]


class BudgetAlert(Base):
    """A threshold reached: its key makes it once per budget, threshold and period, however
    many concurrent statements cross it."""

    __tablename__ = "budget_alerts"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "budget_id"], ["budgets.tenant_id", "budgets.id"], ondelete="CASCADE"
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    budget_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    threshold_percent: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    used: Mapped[Decimal] = mapped_column(Numeric)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
