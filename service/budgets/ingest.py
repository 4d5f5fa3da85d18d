"""Budgets in the ingest statement: the accepted events' quantities are added to the running
total of every budget they count for, and a threshold crossed becomes an alert and its
webhook messages, all in the statement (so the transaction) that stores the events.

Why in the statement: a gateway checks a budget on every request, so the check must read a
total, not add up usage; and the total must include every acknowledged event (a 2xx only
after the commit), which only the ingest transaction itself can promise. What it costs a
statement without budgets: one probe of the empty (tenant_id, meter_id) index range per meter
of the batch; with budgets, one upsert per budget and period touched (not per event).

Counting starts when the budget is created: the totals begin at zero then, so usage accepted
earlier is not in them; usage accepted later counts in the period of its timestamp, from the
period the budget was created in on (a gateway's event may carry its request's start, a moment
before the budget existed).

Exactly once: a threshold's alert is a row keyed by (tenant, budget, period, threshold),
inserted with ON CONFLICT DO NOTHING; the totals' upsert serializes concurrent statements on
the budget's row, so the statement that crosses a threshold sees the total it made, and any
later one finds the alert already there.

Lock order: the CTEs are listed before the rollup upserts, and PostgreSQL runs unreferenced
data-modifying CTEs last-listed first, so every ingest statement locks rollup rows first and
the budget rows (which every concurrent batch of a budget touches) last, for the shortest
time before the commit."""

from __future__ import annotations

import asyncpg

from service.budgets.repository import period_end_sql

THRESHOLD_PAYLOAD = f"""jsonb_build_object(
            'type', 'budget.threshold_reached',
            'timestamp', now(),
            'data', jsonb_build_object(
                'budget_id', b.id, 'tenant_id', b.tenant_id,
                'threshold_percent', u.threshold_percent,
                'used', trim_scale(u.used)::text,
                'limit', jsonb_build_object(
                    'meter', m.event_name, 'quantity', trim_scale(b.limit_quantity)::text),
                'period_start', u.period_start,
                'period_end', {period_end_sql("u.period_start")}))::text"""


def budget_ctes(quantities: str) -> str:
    """The budget CTEs over `quantities`, a CTE of (tenant_id, meter_id, quantity, ts, org_id,
    project_id, api_key_id, user_id, model): one row per accepted event and meter. To be
    placed before the rollup upkeep CTEs."""
    return f"""budget_hits AS (
    SELECT b.tenant_id, b.id AS budget_id,
           date_trunc(b.period, q.ts, t.timezone) AS period_start,
           sum(CASE WHEN b.aggregation = 'count' THEN 1 ELSE coalesce(q.quantity, 0) END) AS used
    FROM {quantities} AS q
    JOIN budgets AS b ON b.tenant_id = q.tenant_id AND b.meter_id = q.meter_id
    JOIN tenants AS t ON t.id = b.tenant_id
    WHERE q.ts >= date_trunc(b.period, b.created_at, t.timezone)
      AND (b.api_key_id IS NULL OR b.api_key_id = q.api_key_id)
      AND (b.user_id IS NULL OR b.user_id = q.user_id)
      AND (b.project_id IS NULL OR b.project_id = q.project_id)
      AND (b.org_id IS NULL OR b.org_id = q.org_id)
      AND (b.model IS NULL OR b.model = q.model)
    GROUP BY 1, 2, 3
),
budget_totals AS (
    INSERT INTO budget_usage AS u (tenant_id, budget_id, period_start, used)
    SELECT tenant_id, budget_id, period_start, used FROM budget_hits
    ORDER BY tenant_id, budget_id, period_start
    ON CONFLICT (tenant_id, budget_id, period_start) DO UPDATE SET used = u.used + excluded.used
    RETURNING u.tenant_id, u.budget_id, u.period_start, u.used
),
budget_crossed AS (
    INSERT INTO budget_alerts AS a (tenant_id, budget_id, period_start, threshold_percent, used)
    SELECT u.tenant_id, u.budget_id, u.period_start, p.threshold, u.used
    FROM budget_totals AS u
    JOIN budgets AS b ON b.tenant_id = u.tenant_id AND b.id = u.budget_id
    CROSS JOIN LATERAL unnest(b.thresholds_percent) AS p(threshold)
    WHERE u.used * 100 >= b.limit_quantity * p.threshold
    ORDER BY 1, 2, 3, 4
    ON CONFLICT DO NOTHING
    RETURNING a.tenant_id, a.budget_id, a.period_start, a.threshold_percent, a.used
),
budget_messages AS (
    INSERT INTO webhook_deliveries
        (tenant_id, id, endpoint_id, type, payload, status, next_attempt_at, created_at)
    SELECT u.tenant_id, gen_random_uuid(), e.id, 'budget.threshold_reached',
           {THRESHOLD_PAYLOAD},
           'pending', now(), now()
    FROM budget_crossed AS u
    JOIN budgets AS b ON b.tenant_id = u.tenant_id AND b.id = u.budget_id
    JOIN meters AS m ON m.id = b.meter_id
    JOIN tenants AS t ON t.id = u.tenant_id
    JOIN webhook_endpoints AS e
      ON 'budget.threshold_reached' = ANY(e.event_types)
     AND (e.tenant_id IS NULL OR e.tenant_id = u.tenant_id)
    RETURNING 1
)"""


# The quantities of the two ingest statements' sources.
SINGLE_QUANTITIES = """budget_quantities AS (
    SELECT tenant_id, meter_id, value AS quantity, ts, org_id, project_id, api_key_id, user_id,
           model
    FROM inserted
)"""
PART_QUANTITIES = """budget_quantities AS (
    SELECT a.tenant_id, q.meter_id, q.quantity, a.ts, a.org_id, a.project_id, a.api_key_id,
           a.user_id, a.model
    FROM accepted AS a
    CROSS JOIN LATERAL unnest(a.meter_ids, a.quantities) AS q(meter_id, quantity)
)"""


# A canceled event's quantities come off the running totals it was added to: the same budgets
# and periods as budget_hits found when it was accepted (a budget created after the event
# never counted it). Alerts already sent stay: a threshold fires once per period. Rows are
# locked in the order ingestion's upsert locks them.
WITHDRAW_SQL = """
WITH quantities AS (
    SELECT e.tenant_id, q.meter_id, q.quantity, e.ts, e.received_at, e.org_id, e.project_id,
           e.api_key_id, e.user_id, e.model
    FROM events AS e
    CROSS JOIN LATERAL unnest(coalesce(e.meter_ids, ARRAY[e.meter_id]),
                              coalesce(e.quantities, ARRAY[e.value])) AS q(meter_id, quantity)
    WHERE e.tenant_id = $1 AND e.id = $2
),
hits AS (
    SELECT b.tenant_id, b.id AS budget_id,
           date_trunc(b.period, q.ts, t.timezone) AS period_start,
           sum(CASE WHEN b.aggregation = 'count' THEN 1 ELSE coalesce(q.quantity, 0) END) AS used
    FROM quantities AS q
    JOIN budgets AS b ON b.tenant_id = q.tenant_id AND b.meter_id = q.meter_id
    JOIN tenants AS t ON t.id = b.tenant_id
    WHERE q.ts >= date_trunc(b.period, b.created_at, t.timezone)
      AND b.created_at <= q.received_at
      AND (b.api_key_id IS NULL OR b.api_key_id = q.api_key_id)
      AND (b.user_id IS NULL OR b.user_id = q.user_id)
      AND (b.project_id IS NULL OR b.project_id = q.project_id)
      AND (b.org_id IS NULL OR b.org_id = q.org_id)
      AND (b.model IS NULL OR b.model = q.model)
    GROUP BY 1, 2, 3
),
locked AS (
    SELECT u.tenant_id, u.budget_id, u.period_start, h.used
    FROM budget_usage AS u
    JOIN hits AS h USING (tenant_id, budget_id, period_start)
    ORDER BY u.tenant_id, u.budget_id, u.period_start
    FOR UPDATE OF u
)
UPDATE budget_usage AS u
SET used = u.used - l.used
FROM locked AS l
WHERE (u.tenant_id, u.budget_id, u.period_start) = (l.tenant_id, l.budget_id, l.period_start)
"""


async def withdraw_event_usage(
    connection: asyncpg.Connection, tenant_id: str, event_id: int
) -> None:
    """Take event `event_id` off the budget totals it counted in (WITHDRAW_SQL), in the
    caller's transaction."""
    await connection.execute(WITHDRAW_SQL, tenant_id, event_id)
