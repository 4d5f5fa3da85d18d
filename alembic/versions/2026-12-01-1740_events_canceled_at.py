"""events: canceled_at, set when an accepted event is canceled (a correction)

Revision ID: 9a3d5c7e1f20
Revises: 4f1c8b2e6d53
Create Date: 2026-12-01 16:00:00.000000+00:00

A canceled event stays in the raw log (its idempotency key stays taken) and leaves every
aggregate; rebuilds from raw events skip it. A nullable column without a default: adding it
rewrites nothing, so it takes only a brief lock of the events table.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "9a3d5c7e1f20"
down_revision: str | None = "4f1c8b2e6d53"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    op.add_column("events", sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("events", "canceled_at")
