"""meters: billable flag; a meter that is not billable may have no currency

Revision ID: 3f6d2a9c1b70
Revises: 6d2e8b40c1a9
Create Date: 2026-12-01 11:20:00.000000+00:00

Every existing meter stays billable (the default), and all of them have a currency, so the
new check holds for existing rows. The downgrade refuses to run while a meter has no currency
(the old schema cannot hold it): give those meters a currency or delete them first.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "3f6d2a9c1b70"
down_revision: str | None = "6d2e8b40c1a9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    op.add_column(
        "meters",
        sa.Column("billable", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )
    op.alter_column("meters", "currency", existing_type=sa.String(length=3), nullable=True)
    op.create_check_constraint(
        op.f("ck_meters_billable_currency"), "meters", "NOT billable OR currency IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_meters_billable_currency"), "meters", type_="check")
    op.alter_column("meters", "currency", existing_type=sa.String(length=3), nullable=False)
    op.drop_column("meters", "billable")
