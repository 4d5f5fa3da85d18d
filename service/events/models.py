from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base


class Event(Base):
    """Raw event: the audit trail and the source rollups are rebuilt from. An event holds one
    quantity (`meter_id`, `value`) or, as a `values` event, several (`meter_ids` and
    `quantities`, in the same order; `meter_id` and `value` null)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_tenant_id_ts", "tenant_id", "ts"),
        CheckConstraint(
            "(meter_id IS NOT NULL AND meter_ids IS NULL AND quantities IS NULL)"
            " OR (meter_id IS NULL AND value IS NULL AND meter_ids IS NOT NULL"
            " AND cardinality(meter_ids) BETWEEN 1 AND 32"
            " AND cardinality(quantities) = cardinality(meter_ids))",
            name="one_form",
        ),
        {"comment": "tenant-scoped; distributed by tenant_id on Citus"},
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    meter_id: Mapped[int | None]
    idempotency_key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of the canonical payload: same key + same hash = duplicate, else conflict.
    payload_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    value: Mapped[Decimal | None] = mapped_column(Numeric)
    meter_ids: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    quantities: Mapped[list[Decimal | None] | None] = mapped_column(ARRAY(Numeric))
    ts: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
    org_id: Mapped[str | None] = mapped_column(String(255))
    project_id: Mapped[str | None] = mapped_column(String(255))
    api_key_id: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255))
    dimensions: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    # Set when the event is canceled: it then counts in no aggregate, but stays here (its
    # idempotency key stays taken) until retention deletes it like any other.
    canceled_at: Mapped[datetime | None]


Index("uq_events_tenant_id_idempotency_key", Event.tenant_id, Event.idempotency_key, unique=True)
