"""Budgets and their running totals. A budget caps one meter's quantity per calendar day or
month of its tenant's zone, optionally narrowed to an attribution (api key, user, project,
org, model). Ingestion adds accepted usage to the budget's row of the event's period in the
statement that stores the events (service.budgets.ingest), so a check reads one row per
budget and sees every acknowledged event."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base


class Budget(Base):
    __tablename__ = "budgets"
    __table_args__ = (
        CheckConstraint("period IN ('day', 'month')", name="period"),
        CheckConstraint("aggregation IN ('sum', 'count')", name="aggregation"),
        CheckConstraint("limit_quantity > 0", name="limit_quantity"),
        # Ingestion looks budgets up by tenant and meter for every statement.
        Index("ix_budgets_tenant_id_meter_id", "tenant_id", "meter_id"),
        Index("ix_budgets_id", "id"),
    )

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    period: Mapped[str] = mapped_column(String(8))
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"))
    # The meter's aggregation when the budget was made: a count budget counts events.
    aggregation: Mapped[str] = mapped_column(String(8))
    limit_quantity: Mapped[Decimal] = mapped_column(Numeric)
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
