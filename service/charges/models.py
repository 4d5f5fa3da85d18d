from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Numeric, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base
from service.meters.models import instant_in_range


class Charge(Base):
    """A recurring fixed charge of one tenant (a platform fee, 25 seats at 40.00): billed on
    every monthly invoice it is effective in, prorated by time in partial months."""

    __tablename__ = "charges"
    __table_args__ = (
        CheckConstraint("unit_amount >= 0", name="unit_amount_non_negative"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "effective_to IS NULL OR effective_to > effective_from", name="effective_interval"
        ),
        CheckConstraint(instant_in_range("effective_from"), name="effective_from_range"),
        CheckConstraint(
            f"effective_to IS NULL OR ({instant_in_range('effective_to')})",
            name="effective_to_range",
        ),
    )

    # tenant_id leads the key, like every tenant-scoped table (distribution by tenant).
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    unit_amount: Mapped[Decimal] = mapped_column(Numeric(32, 12))
    quantity: Mapped[Decimal] = mapped_column(Numeric(32, 12), server_default=text("1"))
    currency: Mapped[str] = mapped_column(String(3))
    effective_from: Mapped[datetime]
    effective_to: Mapped[datetime | None]
    prorate: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Commitment(Base):
    """A tenant's monthly minimum spend in one currency: a month whose usage, minimum and charge
    lines in that currency add up to less than the (prorated) amount gets a commitment line
    for the difference. A tenant's commitments in one currency never overlap in time."""

    __tablename__ = "commitments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "effective_to IS NULL OR effective_to > effective_from", name="effective_interval"
        ),
        CheckConstraint(instant_in_range("effective_from"), name="effective_from_range"),
        CheckConstraint(
            f"effective_to IS NULL OR ({instant_in_range('effective_to')})",
            name="effective_to_range",
        ),
    )

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(32, 12))  # per month
    currency: Mapped[str] = mapped_column(String(3))
    effective_from: Mapped[datetime]
    effective_to: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
