"""statistics on the cube's cell address (meter, grain, projection, bucket) taken together

Revision ID: 4f1c8b2e6d53
Revises: 9a4d2f7c1e35
Create Date: 2026-12-01 17:30:00.000000+00:00

A read of the cube names one meter, grain, projection and bucket. PostgreSQL multiplies the
selectivities of those four equalities as if they were independent, and they are not (a
month's API key x model cells exist only at grain 'm' and projection 20): it expected 5,700
cells of a 10M-event month where there are 160,000, and planned the aggregation above them
for a few thousand rows (a sort, then a group aggregate) instead of hashing them. The
most-common-values list over the four columns gives it the real count.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "4f1c8b2e6d53"
down_revision: str | None = "9a4d2f7c1e35"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE STATISTICS rollup_cube_cells (mcv) "
        "ON meter_id, grain, projection, bucket_start FROM rollup_cube"
    )


def downgrade() -> None:
    op.execute("DROP STATISTICS IF EXISTS rollup_cube_cells")
