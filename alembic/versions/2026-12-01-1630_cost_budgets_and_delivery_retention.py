"""cost budgets (a limit on spend, with running cells rated when read) and an index for the
retention of finished webhook deliveries

Revision ID: 9a4d2f7c1e35
Revises: 7d2a5c9e1f36
Create Date: 2026-12-01 16:30:00.000000+00:00

budgets: meter_id, aggregation and limit_quantity become nullable (a cost budget has none of
them) and limit_cost is added; a check keeps exactly one kind of limit. budget_cost_cells is
keyed by tenant_id first, like the other budget tables. The downgrade drops the new table,
index and column, and refuses nothing: it deletes cost budgets first (their rows could not
satisfy the restored NOT NULL constraints).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "9a4d2f7c1e35"
down_revision: str | None = "7d2a5c9e1f36"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    op.add_column("budgets", sa.Column("limit_cost", sa.Numeric(), nullable=True))
    op.alter_column("budgets", "meter_id", existing_type=sa.Integer(), nullable=True)
    op.alter_column("budgets", "aggregation", existing_type=sa.String(length=8), nullable=True)
    op.alter_column("budgets", "limit_quantity", existing_type=sa.Numeric(), nullable=True)
    op.create_check_constraint(op.f("ck_budgets_limit_cost"), "budgets", "limit_cost > 0")
    op.create_check_constraint(
        op.f("ck_budgets_one_limit"),
        "budgets",
        "(limit_cost IS NULL) = "
        "(meter_id IS NOT NULL AND aggregation IS NOT NULL AND limit_quantity IS NOT NULL)",
    )
    op.create_index(
        "ix_budgets_tenant_id_cost",
        "budgets",
        ["tenant_id"],
        unique=False,
        postgresql_where=sa.text("limit_cost IS NOT NULL"),
    )
    op.create_table(
        "budget_cost_cells",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("budget_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.String(length=255), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("api_key_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("dimensions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("price_keys", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("sum", sa.Numeric(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_ts", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("last_ts", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "budget_id"],
            ["budgets.tenant_id", "budgets.id"],
            name=op.f("fk_budget_cost_cells_tenant_id_budgets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "budget_id",
            "period_start",
            "meter_id",
            "org_id",
            "project_id",
            "api_key_id",
            "user_id",
            "model",
            "dimensions",
            "price_keys",
            name=op.f("pk_budget_cost_cells"),
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_finished_created_at",
        "webhook_deliveries",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('delivered', 'failed')"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_webhook_deliveries_finished_created_at",
        table_name="webhook_deliveries",
        postgresql_where=sa.text("status IN ('delivered', 'failed')"),
    )
    op.drop_table("budget_cost_cells")
    op.drop_index(
        "ix_budgets_tenant_id_cost",
        table_name="budgets",
        postgresql_where=sa.text("limit_cost IS NOT NULL"),
    )
    op.execute("DELETE FROM budgets WHERE limit_cost IS NOT NULL")
    op.drop_constraint(op.f("ck_budgets_one_limit"), "budgets", type_="check")
    op.drop_constraint(op.f("ck_budgets_limit_cost"), "budgets", type_="check")
    op.alter_column("budgets", "limit_quantity", existing_type=sa.Numeric(), nullable=False)
    op.alter_column("budgets", "aggregation", existing_type=sa.String(length=8), nullable=False)
    op.alter_column("budgets", "meter_id", existing_type=sa.Integer(), nullable=False)
    op.drop_column("budgets", "limit_cost")
