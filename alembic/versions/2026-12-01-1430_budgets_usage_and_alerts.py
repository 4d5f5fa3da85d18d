"""budgets: budgets on a meter's quantity, their running totals per period and their alerts

Revision ID: 6c1f3e8a2b94
Revises: 4e8b2c6a9d17
Create Date: 2026-12-01 14:30:00.000000+00:00

All three tables are keyed by tenant_id first (they distribute by tenant). Ingestion adds to
budget_usage and inserts into budget_alerts in its own statement; an alert's key makes it
once per budget, period and threshold. New tables only: the downgrade drops them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "6c1f3e8a2b94"
down_revision: str | None = "4e8b2c6a9d17"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    op.create_table(
        "budgets",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("aggregation", sa.String(length=8), nullable=False),
        sa.Column("limit_quantity", sa.Numeric(), nullable=False),
        sa.Column("api_key_id", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("project_id", sa.String(length=255), nullable=True),
        sa.Column("org_id", sa.String(length=255), nullable=True),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("thresholds_percent", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("aggregation IN ('sum', 'count')", name=op.f("ck_budgets_aggregation")),
        sa.CheckConstraint("period IN ('day', 'month')", name=op.f("ck_budgets_period")),
        sa.CheckConstraint("limit_quantity > 0", name=op.f("ck_budgets_limit_quantity")),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meters.id"], name=op.f("fk_budgets_meter_id_meters")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_budgets_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_budgets")),
    )
    op.create_index("ix_budgets_id", "budgets", ["id"], unique=False)
    op.create_index(
        "ix_budgets_tenant_id_meter_id", "budgets", ["tenant_id", "meter_id"], unique=False
    )
    op.create_table(
        "budget_alerts",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("budget_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("threshold_percent", sa.SmallInteger(), nullable=False),
        sa.Column("used", sa.Numeric(), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "budget_id"],
            ["budgets.tenant_id", "budgets.id"],
            name=op.f("fk_budget_alerts_tenant_id_budgets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "budget_id",
            "period_start",
            "threshold_percent",
            name=op.f("pk_budget_alerts"),
        ),
    )
    op.create_table(
        "budget_usage",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("budget_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("used", sa.Numeric(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "budget_id"],
            ["budgets.tenant_id", "budgets.id"],
            name=op.f("fk_budget_usage_tenant_id_budgets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "budget_id", "period_start", name=op.f("pk_budget_usage")
        ),
    )


def downgrade() -> None:
    op.drop_table("budget_usage")
    op.drop_table("budget_alerts")
    op.drop_index("ix_budgets_tenant_id_meter_id", table_name="budgets")
    op.drop_index("ix_budgets_id", table_name="budgets")
    op.drop_table("budgets")
