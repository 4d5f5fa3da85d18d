"""rollups: one 15-minute row holds every meter an event reported (wide rows), read per meter
through views

Revision ID: 9c3d7e1a5b42
Revises: 5b8e1f3a7c24
Create Date: 2026-12-01 13:10:00.000000+00:00

An LLM call reports 6 to 8 quantities; with one rollup row per meter and key, ingestion wrote
6 to 8 rows per call. `rollup_rows` and `model_rollup_rows` key a row by the sorted set of
meters (`meter_ids`) as well, with `sums` and `last_values` per meter and one `count` and
latest event for all of them (every event of a row reports every meter of it). The per-meter
shape the readers, the fold and ad-hoc SQL use stays available as the views `rollups` and
`model_rollups` (one row per meter of a wide row). Existing rows become one-meter rows, exact
as they were. A later migration that alters these tables must drop and recreate the views.
The downgrade folds the views back into per-meter tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "9c3d7e1a5b42"
down_revision: str | None = "5b8e1f3a7c24"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLLUPS_VIEW = """
CREATE VIEW rollups AS
SELECT r.tenant_id, q.meter_id, r.bucket_start, r.org_id, r.project_id, r.api_key_id,
       r.user_id, r.model, r.dimensions, q.sum, r.count, q.last_value, r.last_ts,
       r.last_event_id, coalesce(q.folded_sum, 0) AS folded_sum, r.folded_count, r.pending
FROM rollup_rows AS r
CROSS JOIN LATERAL unnest(r.meter_ids, r.sums, r.last_values, r.folded_sums)
    AS q(meter_id, sum, last_value, folded_sum)
"""
MODEL_ROLLUPS_VIEW = """
CREATE VIEW model_rollups AS
SELECT r.tenant_id, q.meter_id, r.bucket_start, r.model, r.dimensions, q.sum, r.count,
       q.last_value, r.last_ts, r.last_event_id
FROM model_rollup_rows AS r
CROSS JOIN LATERAL unnest(r.meter_ids, r.sums, r.last_values) AS q(meter_id, sum, last_value)
"""
KEY = "bucket_start, org_id, project_id, api_key_id, user_id, model, dimensions"


def _wide_table(name: str, key: list[sa.Column], *extra: sa.Column) -> None:
    op.create_table(
        name,
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("bucket_start", sa.TIMESTAMP(timezone=True), nullable=False),
        *key,
        sa.Column("dimensions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("meter_ids", postgresql.ARRAY(sa.Integer()), nullable=False),
        *extra,
        sa.Column("sums", postgresql.ARRAY(sa.Numeric()), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_values", postgresql.ARRAY(sa.Numeric()), nullable=False),
        sa.Column("last_ts", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "bucket_start",
            *(c.name for c in key),
            "dimensions",
            "meter_ids",
            name=op.f(f"pk_{name}"),
        ),
    )


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    _wide_table(
        "rollup_rows",
        [
            sa.Column(name, sa.String(length=255), nullable=False)
            for name in ("org_id", "project_id", "api_key_id", "user_id", "model")
        ],
        sa.Column("folded_sums", postgresql.ARRAY(sa.Numeric()), nullable=True),
        sa.Column("folded_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "pending",
            sa.Boolean(),
            sa.Computed("count <> folded_count", persisted=True),
            nullable=False,
        ),
    )
    _wide_table("model_rollup_rows", [sa.Column("model", sa.String(length=255), nullable=False)])
    op.execute(
        f"""
        INSERT INTO rollup_rows (tenant_id, {KEY}, meter_ids, sums, count, last_values, last_ts,
                                 last_event_id, folded_sums, folded_count)
        SELECT tenant_id, {KEY}, ARRAY[meter_id], ARRAY[sum], count, ARRAY[last_value],
               last_ts, last_event_id,
               CASE WHEN folded_count = 0 THEN NULL ELSE ARRAY[folded_sum] END, folded_count
        FROM rollups
        """
    )
    op.execute(
        """
        INSERT INTO model_rollup_rows (tenant_id, bucket_start, model, dimensions, meter_ids,
                                       sums, count, last_values, last_ts, last_event_id)
        SELECT tenant_id, bucket_start, model, dimensions, ARRAY[meter_id], ARRAY[sum], count,
               ARRAY[last_value], last_ts, last_event_id
        FROM model_rollups
        """
    )
    op.drop_table("rollups")
    op.drop_table("model_rollups")
    op.create_index(
        "ix_rollup_rows_pending",
        "rollup_rows",
        ["tenant_id", "bucket_start"],
        unique=False,
        postgresql_where=sa.text("pending"),
    )
    op.execute(ROLLUPS_VIEW)
    op.execute(MODEL_ROLLUPS_VIEW)


LATEST = "(array_agg({column} ORDER BY last_ts DESC, last_event_id DESC))[1]"


def downgrade() -> None:
    # Per-meter tables again, each meter of a wide row on its own row (two wide rows of other
    # meter sets may hold the same meter and key: merged).
    op.execute(
        f"""
        CREATE TABLE rollups_per_meter AS
        SELECT tenant_id, meter_id, {KEY}, sum(sum) AS sum, sum(count)::bigint AS count,
               {LATEST.format(column="last_value")} AS last_value, max(last_ts) AS last_ts,
               {LATEST.format(column="last_event_id")} AS last_event_id,
               sum(folded_sum) AS folded_sum, sum(folded_count)::bigint AS folded_count
        FROM rollups
        GROUP BY tenant_id, meter_id, {KEY}
        """
    )
    op.execute(
        f"""
        CREATE TABLE model_rollups_per_meter AS
        SELECT tenant_id, meter_id, bucket_start, model, dimensions, sum(sum) AS sum,
               sum(count)::bigint AS count, {LATEST.format(column="last_value")} AS last_value,
               max(last_ts) AS last_ts,
               {LATEST.format(column="last_event_id")} AS last_event_id
        FROM model_rollups
        GROUP BY tenant_id, meter_id, bucket_start, model, dimensions
        """
    )
    op.execute("DROP VIEW rollups")
    op.execute("DROP VIEW model_rollups")
    op.drop_index("ix_rollup_rows_pending", table_name="rollup_rows")
    op.drop_table("rollup_rows")
    op.drop_table("model_rollup_rows")
    op.create_table(
        "rollups",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("bucket_start", sa.TIMESTAMP(timezone=True), nullable=False),
        *(
            sa.Column(name, sa.String(length=255), nullable=False)
            for name in ("org_id", "project_id", "api_key_id", "user_id", "model")
        ),
        sa.Column("dimensions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sum", sa.Numeric(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_value", sa.Numeric(), nullable=True),
        sa.Column("last_ts", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("folded_sum", sa.Numeric(), server_default=sa.text("0"), nullable=False),
        sa.Column("folded_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "pending",
            sa.Boolean(),
            sa.Computed("count <> folded_count", persisted=True),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "meter_id",
            "bucket_start",
            "org_id",
            "project_id",
            "api_key_id",
            "user_id",
            "model",
            "dimensions",
            name=op.f("pk_rollups"),
        ),
    )
    op.create_table(
        "model_rollups",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("bucket_start", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("dimensions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sum", sa.Numeric(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_value", sa.Numeric(), nullable=True),
        sa.Column("last_ts", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "meter_id", "bucket_start", "model", "dimensions",
            name=op.f("pk_model_rollups"),
        ),
    )  # fmt: skip
    op.execute(
        f"""
        INSERT INTO rollups (tenant_id, meter_id, {KEY}, sum, count, last_value, last_ts,
                             last_event_id, folded_sum, folded_count)
        SELECT tenant_id, meter_id, {KEY}, sum, count, last_value, last_ts, last_event_id,
               folded_sum, folded_count
        FROM rollups_per_meter
        """
    )
    op.execute(
        """
        INSERT INTO model_rollups SELECT * FROM model_rollups_per_meter
        """
    )
    op.execute("DROP TABLE rollups_per_meter")
    op.execute("DROP TABLE model_rollups_per_meter")
    op.create_index(
        "ix_rollups_pending",
        "rollups",
        ["tenant_id", "bucket_start"],
        unique=False,
        postgresql_where=sa.text("pending"),
    )
