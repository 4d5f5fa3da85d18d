"""prices: volume tiers, flat amounts per tier, free units, packages, minimum amounts

Revision ID: c41d7e2a8f35
Revises: 2e7b9d4c6a18
Create Date: 2026-12-01 13:30:00.000000+00:00

New columns with defaults that keep every existing price as it was (graduated, no free
units, no packages, no minimum); a tier's flat amount lives in the tiers JSON, where an absent
`flat_amount` means 0. The downgrade deletes prices the old schema cannot express (volume
tiers, free units, packages, minimums or flat amounts, which the service stores only when
non-zero): keeping them without those rules would bill other amounts than they say.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "c41d7e2a8f35"
down_revision: str | None = "2e7b9d4c6a18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction. Adding columns with a
    # constant default rewrites nothing (PostgreSQL 11+), and prices is a small table.
    op.add_column(
        "prices",
        sa.Column("tier_mode", sa.String(length=16), server_default="graduated", nullable=False),
    )
    op.add_column(
        "prices",
        sa.Column(
            "free_units",
            sa.Numeric(precision=32, scale=12),
            server_default=sa.text("0"),
            nullable=False,
        ),
    )
    op.add_column(
        "prices", sa.Column("package_size", sa.Numeric(precision=32, scale=12), nullable=True)
    )
    op.add_column(
        "prices", sa.Column("minimum_amount", sa.Numeric(precision=32, scale=12), nullable=True)
    )
    op.create_check_constraint(
        op.f("ck_prices_tier_mode"), "prices", "tier_mode IN ('graduated', 'volume')"
    )
    op.create_check_constraint(
        op.f("ck_prices_volume_tiers"), "prices", "tier_mode = 'graduated' OR tiers <> '[]'::jsonb"
    )
    op.create_check_constraint(
        op.f("ck_prices_free_units_non_negative"), "prices", "free_units >= 0"
    )
    op.create_check_constraint(
        op.f("ck_prices_minimum_amount_non_negative"), "prices", "minimum_amount >= 0"
    )
    op.create_check_constraint(
        op.f("ck_prices_package_size"),
        "prices",
        "package_size IS NULL OR (package_size > 0 AND per_units = 1 AND tiers = '[]'::jsonb)",
    )
    op.create_check_constraint(
        op.f("ck_prices_relative_plain"),
        "prices",
        "relative_to_meter IS NULL OR (free_units = 0 AND package_size IS NULL"
        " AND minimum_amount IS NULL)",
    )


def downgrade() -> None:
    op.execute(
        "DELETE FROM prices WHERE tier_mode <> 'graduated' OR free_units <> 0"
        " OR package_size IS NOT NULL OR minimum_amount IS NOT NULL"
        " OR jsonb_path_exists(tiers, '$[*].flat_amount')"
    )
    for name in (
        "relative_plain",
        "package_size",
        "minimum_amount_non_negative",
        "free_units_non_negative",
        "volume_tiers",
        "tier_mode",
    ):
        op.drop_constraint(op.f(f"ck_prices_{name}"), "prices", type_="check")
    op.drop_column("prices", "minimum_amount")
    op.drop_column("prices", "package_size")
    op.drop_column("prices", "free_units")
    op.drop_column("prices", "tier_mode")
