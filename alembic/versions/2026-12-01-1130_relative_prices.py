"""prices: relative prices (a factor of the price that applies on another meter)

Revision ID: 7a4c9e2d5f13
Revises: 3f6d2a9c1b70
Create Date: 2026-12-01 11:30:00.000000+00:00

A relative price stores the referenced meter's event_name and a factor instead of an amount;
its per_units may be null (shown like the referenced price's). Existing prices all have an
amount and per_units, so the new check holds for them. The downgrade deletes relative prices
(the old schema cannot hold them).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "7a4c9e2d5f13"
down_revision: str | None = "3f6d2a9c1b70"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    op.add_column("prices", sa.Column("relative_to_meter", sa.String(length=64), nullable=True))
    op.add_column(
        "prices", sa.Column("relative_factor", sa.Numeric(precision=32, scale=12), nullable=True)
    )
    op.create_foreign_key(
        op.f("fk_prices_relative_to_meter_meters"),
        "prices",
        "meters",
        ["relative_to_meter"],
        ["event_name"],
    )
    op.alter_column(
        "prices", "unit_amount", existing_type=sa.Numeric(precision=32, scale=12), nullable=True
    )
    # NULL now means "as the referenced price's": no default that would hide it.
    op.alter_column(
        "prices",
        "per_units",
        existing_type=sa.Numeric(precision=32, scale=12),
        existing_server_default=sa.text("1"),
        server_default=None,
        nullable=True,
    )
    op.create_check_constraint(
        op.f("ck_prices_relative_factor_positive"), "prices", "relative_factor > 0"
    )
    op.create_check_constraint(
        op.f("ck_prices_amount_or_relative"),
        "prices",
        "(relative_to_meter IS NULL AND relative_factor IS NULL AND unit_amount IS NOT NULL"
        " AND per_units IS NOT NULL) OR (relative_to_meter IS NOT NULL AND relative_factor"
        " IS NOT NULL AND unit_amount IS NULL)",
    )


def downgrade() -> None:
    op.execute("DELETE FROM prices WHERE relative_to_meter IS NOT NULL")
    op.drop_constraint(op.f("ck_prices_amount_or_relative"), "prices", type_="check")
    op.drop_constraint(op.f("ck_prices_relative_factor_positive"), "prices", type_="check")
    op.alter_column(
        "prices",
        "per_units",
        existing_type=sa.Numeric(precision=32, scale=12),
        server_default=sa.text("1"),
        nullable=False,
    )
    op.alter_column(
        "prices", "unit_amount", existing_type=sa.Numeric(precision=32, scale=12), nullable=False
    )
    op.drop_constraint(op.f("fk_prices_relative_to_meter_meters"), "prices", type_="foreignkey")
    op.drop_column("prices", "relative_factor")
    op.drop_column("prices", "relative_to_meter")
