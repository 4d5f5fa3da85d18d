from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Identity, Numeric, String, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, TimestampedMixin

# Every instant the service stores for billing (price validity, invoice periods) lies in this
# range. Outside it asyncpg maps the year 1 and 9999 edges to -infinity / infinity, which come
# back as naive datetimes and break every comparison with real instants; nothing is billed
# before 2000 or after 9000.
EARLIEST_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(9000, 1, 1, tzinfo=UTC)


def instant_in_range(column: str) -> str:
    """SQL that holds when `column` lies in [EARLIEST_INSTANT, LATEST_INSTANT]."""
    earliest, latest = EARLIEST_INSTANT.isoformat(), LATEST_INSTANT.isoformat()
    return f"{column} >= '{earliest}' AND {column} <= '{latest}'"


class Meter(TimestampedMixin, Base):
    """Platform-wide meter definition (a small reference table)."""

    __tablename__ = "meters"
    __table_args__ = (
        CheckConstraint(
            "aggregation IN ('sum', 'count', 'last', 'max', 'unique_count')", name="aggregation"
        ),
        # unique_count meters, and only they, count the distinct values of one key.
        CheckConstraint(
            "(aggregation = 'unique_count') = (unique_key IS NOT NULL)", name="unique_key"
        ),
        CheckConstraint("NOT allow_negative OR aggregation = 'sum'", name="allow_negative"),
        CheckConstraint("status IN ('active', 'archived')", name="status"),
        # A meter that is billed needs the currency its prices are in.
        CheckConstraint("NOT billable OR currency IS NOT NULL", name="billable_currency"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    event_name: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    unit: Mapped[str | None] = mapped_column(String(32))
    aggregation: Mapped[str] = mapped_column(String(16))
    # unique_count only: the attribution field or declared dimension whose distinct values
    # are counted.
    unique_key: Mapped[str | None] = mapped_column(String(64))
    # sum only: negative values (refunds, credits) are accepted.
    allow_negative: Mapped[bool] = mapped_column(server_default=text("false"))
    dimensions: Mapped[list[str]] = mapped_column(
        ARRAY(String(64)), server_default=text("'{}'::varchar[]")
    )
    # None only for a meter that is not billable (latency, say): it has no prices.
    currency: Mapped[str | None] = mapped_column(String(3))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    # Set once by ingestion when the first event is stored; aggregation and currency are
    # frozen from then on.
    has_events: Mapped[bool] = mapped_column(server_default=text("false"))
    # False: usage is metered and queryable but never billed (no invoice lines).
    billable: Mapped[bool] = mapped_column(server_default=text("true"))
    # Which OpenTelemetry metric feeds this meter through POST /otlp/v1/metrics:
    # {"metric": name, "attributes": {key: value}} (attributes: only points that carry them).
    otel: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class Price(Base):
    """Platform-wide price book entry for one meter; tenant_id set = a contract override."""

    __tablename__ = "prices"
    __table_args__ = (
        CheckConstraint("per_units > 0", name="per_units_positive"),
        CheckConstraint("unit_amount >= 0", name="unit_amount_non_negative"),
        CheckConstraint("relative_factor > 0", name="relative_factor_positive"),
        # Either an amount of its own (per per_units) or a factor of another meter's price.
        CheckConstraint(
            "(relative_to_meter IS NULL AND relative_factor IS NULL AND unit_amount IS NOT NULL"
            " AND per_units IS NOT NULL) OR (relative_to_meter IS NOT NULL AND relative_factor"
            " IS NOT NULL AND unit_amount IS NULL)",
            name="amount_or_relative",
        ),
        CheckConstraint(
            "effective_to IS NULL OR effective_to > effective_from", name="effective_interval"
        ),
        CheckConstraint("tier_mode IN ('graduated', 'volume')", name="tier_mode"),
        CheckConstraint("tier_mode = 'graduated' OR tiers <> '[]'::jsonb", name="volume_tiers"),
        CheckConstraint("free_units >= 0", name="free_units_non_negative"),
        CheckConstraint("minimum_amount >= 0", name="minimum_amount_non_negative"),
        # A package price: unit_amount per package, so per_units is 1, and it has no tiers.
        CheckConstraint(
            "package_size IS NULL OR (package_size > 0 AND per_units = 1 AND tiers = '[]'::jsonb)",
            name="package_size",
        ),
        # A relative price only multiplies another price's rate.
        CheckConstraint(
            "relative_to_meter IS NULL OR (free_units = 0 AND package_size IS NULL"
            " AND minimum_amount IS NULL)",
            name="relative_plain",
        ),
        CheckConstraint(instant_in_range("effective_from"), name="effective_from_range"),
        CheckConstraint(
            f"effective_to IS NULL OR ({instant_in_range('effective_to')})",
            name="effective_to_range",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"), index=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # None for a relative price, whose per_units may be None too (= the referenced price's).
    unit_amount: Mapped[Decimal | None] = mapped_column(Numeric(32, 12))
    # No server default: NULL is meaningful (see above), so the service always sets it.
    per_units: Mapped[Decimal | None] = mapped_column(Numeric(32, 12))
    # A relative price: relative_factor times the rate of the price that applies to the same
    # usage on this meter (event names never change, so the reference is by name).
    relative_to_meter: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("meters.event_name")
    )
    relative_factor: Mapped[Decimal | None] = mapped_column(Numeric(32, 12))
    match: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # [{up_to, unit_amount, flat_amount?}]: decimals as strings, so they stay exact.
    tiers: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    tier_mode: Mapped[str] = mapped_column(String(16), server_default="graduated")
    free_units: Mapped[Decimal] = mapped_column(Numeric(32, 12), server_default=text("0"))
    package_size: Mapped[Decimal | None] = mapped_column(Numeric(32, 12))
    minimum_amount: Mapped[Decimal | None] = mapped_column(Numeric(32, 12))
    effective_from: Mapped[datetime]
    effective_to: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
