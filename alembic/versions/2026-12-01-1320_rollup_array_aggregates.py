"""rollups: aggregates over the wide rows' arrays (element-wise sums, the latest event's values)

Revision ID: 2e7b9d4c6a18
Revises: 9c3d7e1a5b42
Create Date: 2026-12-01 13:20:00.000000+00:00

Ingestion and the rebuild aggregate an LLM call's quantities as one array per wide row. Without
these, every quantity was unnested, grouped per position and gathered back into arrays: about
a third of the ingest statement. `rollup_sums(numeric[])` adds arrays element by element (a
null quantity, a count meter's, adds 0); `rollup_latest(ts, event_id, numeric[])` keeps the
array of the latest (ts, event id), ties to the later-stored event, as `last` always has.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "2e7b9d4c6a18"
down_revision: str | None = "9c3d7e1a5b42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION rollup_sums_step(state numeric[], quantities numeric[])
        RETURNS numeric[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
        BEGIN
            IF state IS NULL THEN
                RETURN array_replace(quantities, NULL::numeric, 0::numeric);
            END IF;
            RETURN ARRAY(
                SELECT s + coalesce(q, 0)
                FROM unnest(state, quantities) WITH ORDINALITY AS e(s, q, n)
                ORDER BY n
            );
        END $$
        """
    )
    op.execute(
        "CREATE AGGREGATE rollup_sums(numeric[]) (SFUNC = rollup_sums_step, STYPE = numeric[])"
    )
    op.execute(
        """
        CREATE FUNCTION rollup_latest_step(
            state numeric[], ts timestamptz, event_id bigint, quantities numeric[]
        ) RETURNS numeric[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
        DECLARE
            candidate numeric[] := ARRAY[extract(epoch FROM ts), event_id::numeric];
        BEGIN
            IF state IS NULL OR candidate > state[1:2] THEN
                RETURN candidate || quantities;
            END IF;
            RETURN state;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION rollup_latest_final(state numeric[]) RETURNS numeric[]
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT state[3:] $$
        """
    )
    op.execute(
        "CREATE AGGREGATE rollup_latest(timestamptz, bigint, numeric[]) "
        "(SFUNC = rollup_latest_step, STYPE = numeric[], FINALFUNC = rollup_latest_final)"
    )


def downgrade() -> None:
    op.execute("DROP AGGREGATE rollup_latest(timestamptz, bigint, numeric[])")
    op.execute("DROP FUNCTION rollup_latest_final(numeric[])")
    op.execute("DROP FUNCTION rollup_latest_step(numeric[], timestamptz, bigint, numeric[])")
    op.execute("DROP AGGREGATE rollup_sums(numeric[])")
    op.execute("DROP FUNCTION rollup_sums_step(numeric[], numeric[])")
