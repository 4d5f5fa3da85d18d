"""rollup_cube: three- and six-hour blocks (grains '3' and '6') beside hours, days and months

Revision ID: 5e8b1d4a7c92
Revises: 9a3d5c7e1f20
Create Date: 2026-12-01 19:15:00.000000+00:00

A day in a zone whose midnight is not a UTC midnight (Berlin: 23:00 to 23:00 UTC) used to be
read as 24 hour cells per group; with blocks of three and six hours (aligned on UTC midnight)
it is about 7. The fold writes the blocks from now on (same projections as hours); this
migration fills them for what has been folded already, from the hour cells (the blocks hold
exactly the sum of their hours: sums and counts added, the latest event and the largest value
kept), under the fold's advisory lock so no fold chunk runs meanwhile. Pending 15-minute rows
stay pending and reach every grain at the next fold.

Stop workers of the previous version before migrating: their fold would keep adding to hours
but not to the blocks.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5e8b1d4a7c92"
down_revision: str | None = "9a3d5c7e1f20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# service.rollups.upkeep.FOLD_LOCK_KEY (a migration does not import the application).
FOLD_LOCK_KEY = int.from_bytes(b"rlupfold", "big") & 0x7FFF_FFFF_FFFF_FFFF
KEY = (
    "tenant_id, meter_id, grain, projection, bucket_start, "
    "org_id, project_id, api_key_id, user_id, model, dimensions"
)
LATEST = "max(ARRAY[extract(epoch FROM last_ts), last_event_id::numeric, last_value])"


def upgrade() -> None:
    op.execute(f"SELECT pg_advisory_xact_lock({FOLD_LOCK_KEY})")
    for grain, hours in (("3", 3), ("6", 6)):
        op.execute(
            f"""
INSERT INTO rollup_cube ({KEY}, sum, count, last_value, last_ts, last_event_id, max_value)
SELECT tenant_id, meter_id, '{grain}', projection,
       date_bin('{hours} hours', bucket_start, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS block,
       org_id, project_id, api_key_id, user_id, model, dimensions,
       sum(sum), sum(count), ({LATEST})[3], max(last_ts), ({LATEST})[2]::bigint,
       max(max_value)
FROM rollup_cube
WHERE grain = 'h'
GROUP BY tenant_id, meter_id, projection, block, org_id, project_id, api_key_id, user_id,
         model, dimensions
ORDER BY tenant_id, meter_id, projection, block, org_id, project_id, api_key_id, user_id,
         model, dimensions
"""
        )


def downgrade() -> None:
    op.execute(f"SELECT pg_advisory_xact_lock({FOLD_LOCK_KEY})")
    op.execute("DELETE FROM rollup_cube WHERE grain IN ('3', '6')")
