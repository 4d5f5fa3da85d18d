"""model rollups: 15-minute buckets keyed by model and dimensions

Revision ID: c1055d5c4835
Revises: 2cfd045969c5
Create Date: 2026-11-23 10:56:38.638420+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "c1055d5c4835"
down_revision: str | None = "2cfd045969c5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    op.create_table(
        "model_rollups",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("bucket_start", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("dimensions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sum", sa.Numeric(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_value", sa.Numeric(), nullable=True),
        sa.Column("last_ts", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "meter_id",
            "bucket_start",
            "model",
            "dimensions",
            name=op.f("pk_model_rollups"),
        ),
    )
    # Backfill from the rollups (not raw events: retention may have deleted those). Ingestion
    # writes both tables in one statement, so SHARE mode keeps it out until this commits.
    op.execute("LOCK TABLE rollups IN SHARE MODE")
    op.execute(
        """
        INSERT INTO model_rollups (tenant_id, meter_id, bucket_start, model, dimensions,
                                   sum, count, last_value, last_ts, last_event_id)
        SELECT tenant_id, meter_id, bucket_start, model, dimensions, sum(sum), sum(count),
               (array_agg(last_value ORDER BY last_ts DESC, last_event_id DESC))[1],
               max(last_ts),
               (array_agg(last_event_id ORDER BY last_ts DESC, last_event_id DESC))[1]
        FROM rollups
        GROUP BY tenant_id, meter_id, bucket_start, model, dimensions
        """
    )


def downgrade() -> None:
    op.drop_table("model_rollups")
