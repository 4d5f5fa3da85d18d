from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, Index, Numeric, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base
from service.meters.models import instant_in_range


class Invoice(Base):
    """A finalized (immutable) or voided invoice. Drafts are computed, never stored."""

    __tablename__ = "invoices"
    __table_args__ = (
        CheckConstraint("status IN ('finalized', 'void')", name="status"),
        CheckConstraint(instant_in_range("period_start"), name="period_start_range"),
        CheckConstraint(instant_in_range("period_end"), name="period_end_range"),
        # One live invoice per tenant, period and currency; a voided one frees the slot.
        Index(
            "uq_invoices_tenant_id_period_currency_finalized",
            "tenant_id",
            "period",
            "currency",
            unique=True,
            postgresql_where=text("status = 'finalized'"),
        ),
        # Numbers are unique across the platform (finance and customers quote them alone):
        # unique per tenant, and each starts with its tenant's id (ids are lowercase, so
        # upper() keeps them apart). Keyed by tenant_id so the table distributes by tenant.
        UniqueConstraint("tenant_id", "number"),
        CheckConstraint(
            "left(number, length(tenant_id) + 1) = upper(tenant_id) || '-'", name="number_prefix"
        ),
        Index("ix_invoices_id", "id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # The whole tenant id (at most 64 characters), '-', the counter (at most 19 digits).
    number: Mapped[str] = mapped_column(String(96))
    status: Mapped[str] = mapped_column(String(16))
    period: Mapped[str] = mapped_column(String(7))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[Decimal] = mapped_column(Numeric)
    total: Mapped[Decimal] = mapped_column(Numeric)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    # The exact JSON document served for this invoice, frozen at finalization so that it is
    # byte-identical whatever happens to prices or raw events later.
    document: Mapped[str] = mapped_column(Text)
    finalized_at: Mapped[datetime]
    voided_at: Mapped[datetime | None]


class InvoiceCounter(Base):
    """Gapless per-tenant invoice numbering: incremented in the finalizing transaction."""

    __tablename__ = "invoice_counters"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_number: Mapped[int] = mapped_column(server_default=text("0"))
