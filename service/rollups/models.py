"""The rollup tables and the constants that define them: which attribution fields a rollup is
keyed by, and how wide a bucket is."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Computed, Index, Integer, Numeric, SmallInteger, String, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.common.time import QUARTER_HOUR, QUARTER_HOUR_MINUTES
from service.db.base import Base

# Attribution fields every event may carry besides its meter's dimensions. In rollups an absent
# value is stored as '' (the API refuses empty strings), so the rollup key can be a plain
# primary key.
ATTRIBUTION_FIELDS = ("org_id", "project_id", "api_key_id", "user_id", "model")
# The only attribution field the coarse model rollups keep (besides the meter's dimensions).
MODEL_ROLLUP_FIELDS = frozenset({"model"})
# Rollup bucket width: the quarter-hour grid of service.common.time, which also checks that
# the instants splitting usage lie on it. Every real UTC offset is a multiple of 15 minutes, so
# windows that start at local midnight in any IANA zone are unions of whole buckets.
BUCKET_MINUTES = QUARTER_HOUR_MINUTES
BUCKET = QUARTER_HOUR


class Aggregates:
    """What every per-meter rollup cell holds, whatever its key: the values' sum (an event
    without value adds 0), their number, and the latest event's value, time and id (latest by
    event time, ties to the higher id, the later stored)."""

    sum: Mapped[Decimal] = mapped_column(Numeric)
    count: Mapped[int] = mapped_column(BigInteger)
    last_value: Mapped[Decimal | None] = mapped_column(Numeric)
    last_ts: Mapped[datetime]
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    # max meters only (null for others): the largest value.
    max_value: Mapped[Decimal | None] = mapped_column(Numeric)


class WideAggregates:
    """The aggregates of a 15-minute row, which holds several meters at once: one element per
    meter of `meter_ids` (sorted) in `sums` and `last_values`. Every event counted in a row
    carries every meter of it (an LLM call's input, output and cache tokens), so the row's
    events are one `count` and one latest event (`last_ts`, `last_event_id`) for all of its
    meters. Ingestion then writes one row per call and key, not one per quantity."""

    sums: Mapped[list[Decimal]] = mapped_column(ARRAY(Numeric))
    count: Mapped[int] = mapped_column(BigInteger)
    last_values: Mapped[list[Decimal | None]] = mapped_column(ARRAY(Numeric))
    last_ts: Mapped[datetime]
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    # The largest value per meter, kept only for rows holding a max meter (null otherwise:
    # sum and count ingestion never writes it).
    maxes: Mapped[list[Decimal | None] | None] = mapped_column(ARRAY(Numeric))


class RollupRow(WideAggregates, Base):
    """Pre-aggregated usage per 15-minute bucket and full attribution key, for a set of meters
    reported together. Read per meter through the view `rollups` (one row per meter of a row,
    created by the migrations), which every reader uses; written by ingestion, the rebuild and
    the fold's bookkeeping only."""

    __tablename__ = "rollup_rows"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    org_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    dimensions: Mapped[dict[str, str]] = mapped_column(JSONB, primary_key=True)
    meter_ids: Mapped[list[int]] = mapped_column(ARRAY(Integer), primary_key=True)
    # How much of `sums` and `count` the fold has already added to the coarse levels
    # (`rollup_cube`); null sums: nothing yet. A row is pending while count <> folded_count:
    # every event adds 1 to count, so any event not yet folded shows there. Ingestion never
    # writes these columns.
    folded_sums: Mapped[list[Decimal] | None] = mapped_column(ARRAY(Numeric))
    folded_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # The same test as a column of its own: PostgreSQL keeps statistics on it (it cannot
    # estimate a comparison of two columns, and would then plan for nearly every row pending).
    pending: Mapped[bool] = mapped_column(Computed("count <> folded_count", persisted=True))

    __table_args__ = (
        # Finds the pending rows (few: the fold keeps up) without scanning the folded ones.
        Index(
            "ix_rollup_rows_pending", "tenant_id", "bucket_start", postgresql_where=text("pending")
        ),
    )


class ModelRollupRow(WideAggregates, Base):
    """The same 15-minute buckets as `RollupRow`, keyed only by model and dimensions: a
    tenant's quarter hours grouped by model read far fewer of these rows than full-key ones
    (with many users and keys, the full-key rollups barely aggregate). Kept by ingestion in the
    same statement; read per meter through the view `model_rollups` by usage queries that group
    and filter only by model and dimensions."""

    __tablename__ = "model_rollup_rows"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    dimensions: Mapped[dict[str, str]] = mapped_column(JSONB, primary_key=True)
    meter_ids: Mapped[list[int]] = mapped_column(ARRAY(Integer), primary_key=True)


class RollupCube(Aggregates, Base):
    """The coarse levels: the 15-minute rollups folded into hour, three-hour, six-hour, day and
    month buckets (UTC), each in several projections (the rollup key with some attribution
    fields dropped, stored as '' and '{}'), so a month grouped by user reads one row per user
    instead of one per event. Written only by the fold (service.rollups.fold), never by
    ingestion; a reader adds the pending part of the 15-minute rows (count <> folded_count) to
    stay exact."""

    __tablename__ = "rollup_cube"
    # Room on each page for the fold's updates of a cell to stay on its page (HOT): a month's
    # cells are updated by every fold of that month.
    __table_args__ = {"postgresql_with": {"fillfactor": "70"}}

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    meter_id: Mapped[int] = mapped_column(primary_key=True)
    grain: Mapped[str] = mapped_column(String(1), primary_key=True)  # levels.Grain
    projection: Mapped[int] = mapped_column(SmallInteger, primary_key=True)  # field bits kept
    # Key columns in the "C" collation: the index orders them by code point, '' (absent)
    # first, which is the order answers list groups in, so a read needs no sort.
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    org_id: Mapped[str] = mapped_column(String(255, collation="C"), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255, collation="C"), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(String(255, collation="C"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255, collation="C"), primary_key=True)
    model: Mapped[str] = mapped_column(String(255, collation="C"), primary_key=True)
    dimensions: Mapped[dict[str, str]] = mapped_column(JSONB, primary_key=True)
