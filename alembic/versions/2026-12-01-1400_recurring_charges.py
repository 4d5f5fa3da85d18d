"""charges: recurring fixed charges per tenant (platform fees, seats)

Revision ID: 9d2f6c1e8a47
Revises: c41d7e2a8f35
Create Date: 2026-12-01 14:00:00.000000+00:00

A new table, keyed by tenant first like every tenant-scoped table. The downgrade drops it with
the charges in it: invoices already finalized keep their charge lines in their snapshots.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "9d2f6c1e8a47"
down_revision: str | None = "c41d7e2a8f35"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EARLIEST = "'2000-01-01T00:00:00+00:00'"
_LATEST = "'9000-01-01T00:00:00+00:00'"


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    op.create_table(
        "charges",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("unit_amount", sa.Numeric(precision=32, scale=12), nullable=False),
        sa.Column(
            "quantity",
            sa.Numeric(precision=32, scale=12),
            server_default=sa.text("1"),
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("effective_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("prorate", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("unit_amount >= 0", name=op.f("ck_charges_unit_amount_non_negative")),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_charges_quantity_positive")),
        sa.CheckConstraint(
            "effective_to IS NULL OR effective_to > effective_from",
            name=op.f("ck_charges_effective_interval"),
        ),
        sa.CheckConstraint(
            f"effective_from >= {_EARLIEST} AND effective_from <= {_LATEST}",
            name=op.f("ck_charges_effective_from_range"),
        ),
        sa.CheckConstraint(
            f"effective_to IS NULL OR (effective_to >= {_EARLIEST} AND effective_to <= {_LATEST})",
            name=op.f("ck_charges_effective_to_range"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_charges_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_charges")),
    )


def downgrade() -> None:
    op.drop_table("charges")
