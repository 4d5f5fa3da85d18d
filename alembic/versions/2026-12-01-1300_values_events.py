"""events: one event may carry several meters' quantities (`values` events)

Revision ID: 5b8e1f3a7c24
Revises: 7a4c9e2d5f13
Create Date: 2026-12-01 13:00:00.000000+00:00

An event holds either one quantity (meter_id + value, as before) or several (meter_ids and
quantities, arrays of equal length, 1 to 32 entries; meter_id and value then null). Existing
rows are all of the first form, so the check holds for them; it is added NOT VALID and then
validated, so the long scan holds only a lock that lets ingestion go on. The downgrade refuses
while values events exist: the old schema cannot hold them and dropping them would leave
rollups that count events no longer stored.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "5b8e1f3a7c24"
down_revision: str | None = "7a4c9e2d5f13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ONE_FORM = (
    "(meter_id IS NOT NULL AND meter_ids IS NULL AND quantities IS NULL)"
    " OR (meter_id IS NULL AND value IS NULL AND meter_ids IS NOT NULL"
    " AND cardinality(meter_ids) BETWEEN 1 AND 32"
    " AND cardinality(quantities) = cardinality(meter_ids))"
)


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    op.add_column("events", sa.Column("meter_ids", postgresql.ARRAY(sa.Integer()), nullable=True))
    op.add_column("events", sa.Column("quantities", postgresql.ARRAY(sa.Numeric()), nullable=True))
    op.alter_column("events", "meter_id", existing_type=sa.Integer(), nullable=True)
    op.execute(f"ALTER TABLE events ADD CONSTRAINT ck_events_one_form CHECK ({ONE_FORM}) NOT VALID")
    op.execute("ALTER TABLE events VALIDATE CONSTRAINT ck_events_one_form")


def downgrade() -> None:
    op.execute(
        """
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM events WHERE meter_ids IS NOT NULL) THEN
                RAISE EXCEPTION 'events with values exist: the previous schema cannot hold them';
            END IF;
        END $$
        """
    )
    op.drop_constraint(op.f("ck_events_one_form"), "events", type_="check")
    op.alter_column("events", "meter_id", existing_type=sa.Integer(), nullable=False)
    op.drop_column("events", "quantities")
    op.drop_column("events", "meter_ids")
