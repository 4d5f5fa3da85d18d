"""rollup cube: hour, day and month levels folded from the 15-minute rollups

Revision ID: 3f9c2a71d5e8
Revises: 8e3a61d0b2c7
Create Date: 2026-12-01 11:00:00.000000+00:00

The 15-minute rollups gain `folded_sum` and `folded_count` (what the fold has already added to
the cube; 0 here, so every existing row starts pending and the fold folds it) and a partial
index over the pending rows (`pending`, a stored
generated column). `rollup_cube` holds the coarse levels; it starts empty, which is
exact: readers add the pending part of the 15-minute rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "3f9c2a71d5e8"
down_revision: str | None = "8e3a61d0b2c7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults: PostgreSQL adds these columns without rewriting the table.
    op.add_column(
        "rollups",
        sa.Column("folded_sum", sa.Numeric(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "rollups",
        sa.Column("folded_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    # A stored generated column rewrites the table once (fine for the sizes this runs on);
    # PostgreSQL keeps statistics on it, which it cannot for count <> folded_count.
    op.add_column(
        "rollups",
        sa.Column(
            "pending",
            sa.Boolean(),
            sa.Computed("count <> folded_count", persisted=True),
            nullable=False,
        ),
    )
    op.create_index(
        "ix_rollups_pending",
        "rollups",
        ["tenant_id", "bucket_start"],
        postgresql_where=sa.text("pending"),
    )
    op.create_table(
        "rollup_cube",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("grain", sa.String(length=1), nullable=False),
        sa.Column("projection", sa.SmallInteger(), nullable=False),
        sa.Column("bucket_start", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("org_id", sa.String(length=255, collation="C"), nullable=False),
        sa.Column("project_id", sa.String(length=255, collation="C"), nullable=False),
        sa.Column("api_key_id", sa.String(length=255, collation="C"), nullable=False),
        sa.Column("user_id", sa.String(length=255, collation="C"), nullable=False),
        sa.Column("model", sa.String(length=255, collation="C"), nullable=False),
        sa.Column("dimensions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sum", sa.Numeric(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_value", sa.Numeric(), nullable=True),
        sa.Column("last_ts", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "meter_id",
            "grain",
            "projection",
            "bucket_start",
            "org_id",
            "project_id",
            "api_key_id",
            "user_id",
            "model",
            "dimensions",
            name=op.f("pk_rollup_cube"),
        ),
        postgresql_with={"fillfactor": "70"},
    )


def downgrade() -> None:
    op.drop_table("rollup_cube")
    op.drop_index("ix_rollups_pending", table_name="rollups")
    op.drop_column("rollups", "pending")
    op.drop_column("rollups", "folded_count")
    op.drop_column("rollups", "folded_sum")
