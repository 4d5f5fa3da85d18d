"""meters: `max` and `unique_count` aggregations, `unique_key`, `allow_negative`; rollups keep maxes

Revision ID: 7d2a5c9e1f36
Revises: 6c1f3e8a2b94
Create Date: 2026-12-01 16:30:00.000000+00:00

A max meter's largest value per row lives in its own nullable array `maxes` (one element per
meter of `meter_ids`, like `sums`), written only by ingest statements that carry a max meter's
event and by the rebuild: rows of other meters keep it null, so sum and count ingestion writes
nothing more. The cube gets `max_value` (merged with greatest by the fold). `rollup_max`
aggregates arrays element by element with greatest. unique_count needs no storage: its key is
already a rollup key column. The views `rollups` and `model_rollups` show `max_value`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "7d2a5c9e1f36"
down_revision: str | None = "6c1f3e8a2b94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLLUPS_VIEW = """
CREATE VIEW rollups AS
SELECT r.tenant_id, q.meter_id, r.bucket_start, r.org_id, r.project_id, r.api_key_id,
       r.user_id, r.model, r.dimensions, q.sum, r.count, q.last_value, r.last_ts,
       r.last_event_id, coalesce(q.folded_sum, 0) AS folded_sum, r.folded_count, r.pending{max}
FROM rollup_rows AS r
CROSS JOIN LATERAL unnest(r.meter_ids, r.sums, r.last_values, r.folded_sums{maxes})
    AS q(meter_id, sum, last_value, folded_sum{max_name})
"""
MODEL_ROLLUPS_VIEW = """
CREATE VIEW model_rollups AS
SELECT r.tenant_id, q.meter_id, r.bucket_start, r.model, r.dimensions, q.sum, r.count,
       q.last_value, r.last_ts, r.last_event_id{max}
FROM model_rollup_rows AS r
CROSS JOIN LATERAL unnest(r.meter_ids, r.sums, r.last_values{maxes})
    AS q(meter_id, sum, last_value{max_name})
"""
WITH_MAX = {"max": ", q.max_value", "maxes": ", r.maxes", "max_name": ", max_value"}
WITHOUT_MAX = {"max": "", "maxes": "", "max_name": ""}


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_constraint(op.f("ck_meters_aggregation"), "meters", type_="check")
    op.alter_column(
        "meters", "aggregation", type_=sa.String(length=16), existing_type=sa.String(length=8)
    )
    op.create_check_constraint(
        op.f("ck_meters_aggregation"),
        "meters",
        "aggregation IN ('sum', 'count', 'last', 'max', 'unique_count')",
    )
    op.add_column("meters", sa.Column("unique_key", sa.String(length=64), nullable=True))
    op.add_column(
        "meters",
        sa.Column("allow_negative", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_meters_unique_key"),
        "meters",
        "(aggregation = 'unique_count') = (unique_key IS NOT NULL)",
    )
    op.create_check_constraint(
        op.f("ck_meters_allow_negative"), "meters", "NOT allow_negative OR aggregation = 'sum'"
    )
    op.execute("DROP VIEW rollups")
    op.execute("DROP VIEW model_rollups")
    op.add_column("rollup_rows", sa.Column("maxes", postgresql.ARRAY(sa.Numeric()), nullable=True))
    op.add_column(
        "model_rollup_rows", sa.Column("maxes", postgresql.ARRAY(sa.Numeric()), nullable=True)
    )
    op.add_column("rollup_cube", sa.Column("max_value", sa.Numeric(), nullable=True))
    op.execute(ROLLUPS_VIEW.format(**WITH_MAX))
    op.execute(MODEL_ROLLUPS_VIEW.format(**WITH_MAX))
    op.execute(
        """
        CREATE FUNCTION rollup_max_step(state numeric[], quantities numeric[])
        RETURNS numeric[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
        BEGIN
            IF state IS NULL THEN
                RETURN quantities;
            END IF;
            IF quantities IS NULL THEN
                RETURN state;
            END IF;
            RETURN ARRAY(
                SELECT greatest(s, q)
                FROM unnest(state, quantities) WITH ORDINALITY AS e(s, q, n)
                ORDER BY n
            );
        END $$
        """
    )
    op.execute(
        "CREATE AGGREGATE rollup_max(numeric[]) (SFUNC = rollup_max_step, STYPE = numeric[])"
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.execute("DROP AGGREGATE rollup_max(numeric[])")
    op.execute("DROP FUNCTION rollup_max_step(numeric[], numeric[])")
    op.execute("DROP VIEW rollups")
    op.execute("DROP VIEW model_rollups")
    op.drop_column("rollup_cube", "max_value")
    op.drop_column("model_rollup_rows", "maxes")
    op.drop_column("rollup_rows", "maxes")
    op.execute(ROLLUPS_VIEW.format(**WITHOUT_MAX))
    op.execute(MODEL_ROLLUPS_VIEW.format(**WITHOUT_MAX))
    # Fails while max or unique_count meters exist (their events would lose their meaning).
    op.drop_constraint(op.f("ck_meters_allow_negative"), "meters", type_="check")
    op.drop_constraint(op.f("ck_meters_unique_key"), "meters", type_="check")
    op.drop_column("meters", "allow_negative")
    op.drop_column("meters", "unique_key")
    op.drop_constraint(op.f("ck_meters_aggregation"), "meters", type_="check")
    op.alter_column(
        "meters", "aggregation", type_=sa.String(length=8), existing_type=sa.String(length=16)
    )
    op.create_check_constraint(
        op.f("ck_meters_aggregation"), "meters", "aggregation IN ('sum', 'count', 'last')"
    )
