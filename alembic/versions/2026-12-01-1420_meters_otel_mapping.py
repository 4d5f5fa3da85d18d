"""meters: the OpenTelemetry metric (and attributes) that feeds a meter

Revision ID: 5b8e1f0c7a24
Revises: 3e7a0b5d2c96
Create Date: 2026-12-01 14:20:00.000000+00:00

A nullable column: existing meters map no metric, and adding it rewrites nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "5b8e1f0c7a24"
down_revision: str | None = "3e7a0b5d2c96"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    op.add_column("meters", sa.Column("otel", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("meters", "otel")
