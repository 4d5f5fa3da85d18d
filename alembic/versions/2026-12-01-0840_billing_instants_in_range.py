"""billing instants in range: prices' validity and invoices' periods lie in 2000..9000

Revision ID: 5b1f0c2e7a94
Revises: c1055d5c4835
Create Date: 2026-12-01 08:40:00.000000+00:00

The API accepted any instant for a price, so the year 1 became -infinity (asyncpg's mapping),
which reads back as a naive datetime and broke invoicing for every tenant. Rows already out of
range are repaired before the constraints are added:

- a price that lies wholly outside [2000-01-01, 9000-01-01] prices nothing that can be invoiced
  and is deleted (invoices keep their lines as snapshots, nothing references a price row);
- the other prices and invoice periods are clamped to the range, which changes no amount: no
  usage can lie outside it.

The downgrade drops the constraints; repaired rows stay repaired.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5b1f0c2e7a94"
down_revision: str | None = "c1055d5c4835"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EARLIEST = "'2000-01-01T00:00:00+00:00'"
LATEST = "'9000-01-01T00:00:00+00:00'"


def _in_range(column: str) -> str:
    return f"{column} >= {EARLIEST} AND {column} <= {LATEST}"


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    op.execute(f"DELETE FROM prices WHERE effective_from >= {LATEST} OR effective_to <= {EARLIEST}")
    op.execute(
        f"UPDATE prices SET effective_from = GREATEST(effective_from, {EARLIEST}::timestamptz), "
        f"effective_to = LEAST(effective_to, {LATEST}::timestamptz) "
        f"WHERE NOT ({_in_range('effective_from')}) OR NOT ({_in_range('effective_to')})"
    )
    for column in ("period_start", "period_end"):
        op.execute(
            f"UPDATE invoices SET {column} = "
            f"LEAST(GREATEST({column}, {EARLIEST}::timestamptz), {LATEST}::timestamptz) "
            f"WHERE NOT ({_in_range(column)})"
        )
    op.create_check_constraint(
        op.f("ck_prices_effective_from_range"), "prices", _in_range("effective_from")
    )
    op.create_check_constraint(
        op.f("ck_prices_effective_to_range"),
        "prices",
        f"effective_to IS NULL OR ({_in_range('effective_to')})",
    )
    op.create_check_constraint(
        op.f("ck_invoices_period_start_range"), "invoices", _in_range("period_start")
    )
    op.create_check_constraint(
        op.f("ck_invoices_period_end_range"), "invoices", _in_range("period_end")
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_invoices_period_end_range"), "invoices", type_="check")
    op.drop_constraint(op.f("ck_invoices_period_start_range"), "invoices", type_="check")
    op.drop_constraint(op.f("ck_prices_effective_to_range"), "prices", type_="check")
    op.drop_constraint(op.f("ck_prices_effective_from_range"), "prices", type_="check")
