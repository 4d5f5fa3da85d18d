"""commitments: a tenant's monthly minimum spend per currency

Revision ID: 3e7a0b5d2c96
Revises: 9d2f6c1e8a47
Create Date: 2026-12-01 14:15:00.000000+00:00

A new table, keyed by tenant first. The downgrade drops it: finalized invoices keep their
commitment lines in their snapshots.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "3e7a0b5d2c96"
down_revision: str | None = "9d2f6c1e8a47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EARLIEST = "'2000-01-01T00:00:00+00:00'"
_LATEST = "'9000-01-01T00:00:00+00:00'"


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    op.create_table(
        "commitments",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=32, scale=12), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("effective_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_commitments_amount_positive")),
        sa.CheckConstraint(
            "effective_to IS NULL OR effective_to > effective_from",
            name=op.f("ck_commitments_effective_interval"),
        ),
        sa.CheckConstraint(
            f"effective_from >= {_EARLIEST} AND effective_from <= {_LATEST}",
            name=op.f("ck_commitments_effective_from_range"),
        ),
        sa.CheckConstraint(
            f"effective_to IS NULL OR (effective_to >= {_EARLIEST} AND effective_to <= {_LATEST})",
            name=op.f("ck_commitments_effective_to_range"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_commitments_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_commitments")),
    )


def downgrade() -> None:
    op.drop_table("commitments")
