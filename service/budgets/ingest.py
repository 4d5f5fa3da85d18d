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

Cost budgets: a spend depends on prices (tenant overrides, matches, effective dates, tiers
filled by the tenant's whole month), which SQL does not know; so the statement keeps, per cost
budget and period, the accepted quantities per meter and the attributes its tenant's prices
match on (its cells, in `budget_cost_cells`: few per budget, e.g. one per meter and model),
and returns the (budget, period) pairs it touched. In the same transaction,
`record_cost_thresholds` then takes each pair's `budget_usage` row (serializing concurrent
statements on it), prices the cells with the tenant's prices as GET /v1/costs does
(service.budgets.cost_usage), and records the thresholds reached, once each, with their
webhook messages. A check prices the same cells.

Lock order: the CTEs are listed before the rollup upserts, and PostgreSQL runs unreferenced
data-modifying CTEs last-listed first, so every ingest statement locks rollup rows first and
the budget rows (which every concurrent batch of a budget touches) last, for the shortest
time before the commit: quantity totals, then (listed first, so run last) cost budgets' cells;
`record_cost_thresholds` then locks the cost budgets' period rows, in key order too."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from service.budgets.cost_usage import costs_used
from service.budgets.repository import (
    Period,
    cost_budgets,
    lock_cost_periods,
    period_end_sql,
    record_cost_alerts,
)
from service.common.money import render_quantity
from service.costs.service import render_cost
from service.meters.pricing import AmbiguousPriceError, PriceCycleError
from service.webhooks.outbox import enqueue

log = structlog.get_logger("service.budgets")

# A budget (b) counts a quantity (q) when every attribute the budget is scoped to matches.
SCOPE_MATCH = """(b.api_key_id IS NULL OR b.api_key_id = q.api_key_id)
      AND (b.user_id IS NULL OR b.user_id = q.user_id)
      AND (b.project_id IS NULL OR b.project_id = q.project_id)
      AND (b.org_id IS NULL OR b.org_id = q.org_id)
      AND (b.model IS NULL OR b.model = q.model)"""

CELL_KEY = (
    "tenant_id, budget_id, period_start, meter_id, org_id, project_id, api_key_id, user_id, "
    "model, dimensions, price_keys"
)


def _kept(field: str) -> str:
    """A cell's value of an attribution field: '' unless some price matches on it."""
    return f"CASE WHEN '{field}' = ANY(k.keys) THEN coalesce(q.{field}, '') ELSE '' END AS {field}"


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
    project_id, api_key_id, user_id, model, dimensions): one row per accepted event and meter.
    To be placed before the rollup upkeep CTEs; the statement's result ends with
    COST_TOUCHED_ROW."""
    return f"""budget_price_keys AS MATERIALIZED (
    -- Per tenant with cost budgets in the statement: every key its prices (list prices and its
    -- overrides, of any meter) match on. A cell keeps only these attributes.
    SELECT t.id AS tenant_id,
           ARRAY(SELECT DISTINCT k.key
                 FROM prices AS p CROSS JOIN LATERAL jsonb_object_keys(p.match) AS k(key)
                 WHERE p.tenant_id IS NULL OR p.tenant_id = t.id
                 ORDER BY k.key)::text[] AS keys
    FROM tenants AS t
    WHERE t.id IN (SELECT tenant_id FROM budgets WHERE limit_cost IS NOT NULL)
      AND t.id IN (SELECT tenant_id FROM {quantities})
),
budget_cost_hits AS (
    SELECT b.tenant_id, b.id AS budget_id,
           date_trunc(b.period, q.ts, t.timezone) AS period_start, q.meter_id,
           {_kept("org_id")}, {_kept("project_id")}, {_kept("api_key_id")},
           {_kept("user_id")}, {_kept("model")},
           coalesce((SELECT jsonb_object_agg(d.key, d.value) FROM jsonb_each(q.dimensions) AS d
                     WHERE d.key = ANY(k.keys)), '{{}}'::jsonb) AS dimensions,
           k.keys AS price_keys,
           sum(coalesce(q.quantity, 0)) AS sum, count(*) AS count,
           min(q.ts) AS first_ts, max(q.ts) AS last_ts
    FROM {quantities} AS q
    JOIN budgets AS b ON b.tenant_id = q.tenant_id AND b.limit_cost IS NOT NULL
    JOIN budget_price_keys AS k ON k.tenant_id = b.tenant_id
    JOIN tenants AS t ON t.id = b.tenant_id
    JOIN meters AS m ON m.id = q.meter_id
    WHERE m.billable AND m.currency = t.currency
      AND q.ts >= date_trunc(b.period, b.created_at, t.timezone)
      AND {SCOPE_MATCH}
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
),
budget_cost_touched AS (
    INSERT INTO budget_cost_cells AS c ({CELL_KEY}, sum, count, first_ts, last_ts)
    SELECT {CELL_KEY}, sum, count, first_ts, last_ts FROM budget_cost_hits
    ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
    ON CONFLICT ({CELL_KEY}) DO UPDATE
    SET sum = c.sum + excluded.sum, count = c.count + excluded.count,
        first_ts = least(c.first_ts, excluded.first_ts),
        last_ts = greatest(c.last_ts, excluded.last_ts)
),
budget_hits AS (
    SELECT b.tenant_id, b.id AS budget_id,
           date_trunc(b.period, q.ts, t.timezone) AS period_start,
           sum(CASE WHEN b.aggregation = 'count' THEN 1 ELSE coalesce(q.quantity, 0) END) AS used
    FROM {quantities} AS q
    JOIN budgets AS b ON b.tenant_id = q.tenant_id AND b.meter_id = q.meter_id
    JOIN tenants AS t ON t.id = b.tenant_id
    WHERE q.ts >= date_trunc(b.period, b.created_at, t.timezone)
      AND {SCOPE_MATCH}
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


# What an ingest statement returns besides its events: one more row (no idempotency key)
# holding the (tenant, cost budget, period) triples whose cells it adds to, when there are
# any. It reads what the cells' upsert will write, not the upsert itself: a referenced
# data-modifying CTE would run (and lock the cells) first, an unreferenced one runs last. One
# row, not a column of every event's row: decoding the triples 1000 times cost more than the
# statement.
COST_TOUCHED_ROW = """
UNION ALL
SELECT NULL, NULL, NULL, array_agg(DISTINCT (tenant_id, budget_id, period_start))
FROM budget_cost_hits HAVING count(*) > 0"""


async def record_cost_thresholds(
    connection: asyncpg.Connection, touched: Sequence[tuple[str, uuid.UUID, datetime]]
) -> None:
    """Record the thresholds the cost budgets' spend reached in the periods `touched` by the
    ingest statement just run on `connection`, in its transaction, with their webhook
    messages: per tenant, the (budget, period) rows locked first (in key order), then the
    spends priced (service.budgets.cost_usage). Prices that cannot be resolved (ambiguous,
    cyclic) leave the tenant's thresholds to a later statement and never fail ingestion."""
    by_tenant: dict[str, list[Period]] = {}
    for tenant_id, budget_id, period_start in sorted(set(touched)):
        by_tenant.setdefault(tenant_id, []).append((budget_id, period_start))
    for tenant_id, periods in by_tenant.items():
        await lock_cost_periods(connection, tenant_id, periods)
        budgets = await cost_budgets(connection, tenant_id, periods)  # deleted ones left out
        try:
            spends = await costs_used(connection, tenant_id, budgets)
        except (AmbiguousPriceError, PriceCycleError) as exc:
            log.warning("budgets.cost_unpriceable", tenant_id=tenant_id, error=str(exc))
            continue
        recorded = await record_cost_alerts(
            connection,
            tenant_id,
            [((b.id, b.period_start), used) for b, used in zip(budgets, spends, strict=True)],
        )
        found = {(b.id, b.period_start): (b, used) for b, used in zip(budgets, spends, strict=True)}
        for budget_id, period_start, threshold in recorded:
            budget, used = found[(budget_id, period_start)]
            zone = ZoneInfo(budget.timezone)
            await enqueue(
                connection,
                tenant_id,
                "budget.threshold_reached",
                {
                    "budget_id": str(budget_id),
                    "tenant_id": tenant_id,
                    "threshold_percent": threshold,
                    "used": render_cost(used),
                    "limit": {
                        "cost": render_quantity(budget.limit_cost),
                        "currency": budget.currency,
                    },
                    "period_start": period_start.astimezone(zone).isoformat(),
                    "period_end": budget.period_end.astimezone(zone).isoformat(),
                },
            )


# The quantities of the two ingest statements' sources.
SINGLE_QUANTITIES = """budget_quantities AS (
    SELECT tenant_id, meter_id, value AS quantity, ts, org_id, project_id, api_key_id, user_id,
           model, dimensions
    FROM inserted
)"""
PART_QUANTITIES = """budget_quantities AS (
    SELECT a.tenant_id, q.meter_id, q.quantity, a.ts, a.org_id, a.project_id, a.api_key_id,
           a.user_id, a.model, a.dimensions
    FROM accepted AS a
    CROSS JOIN LATERAL unnest(a.meter_ids, a.quantities) AS q(meter_id, quantity)
)"""


# A canceled event's quantities come off the running totals it was added to: the same budgets
# and periods as budget_hits found when it was accepted (a budget created after the event
# never counted it). Alerts already sent stay: a threshold fires once per period. Rows are
# locked in the order ingestion's upsert locks them.
WITHDRAW_SQL = f"""
WITH quantities AS (
    SELECT e.tenant_id, q.meter_id, q.quantity, e.ts, e.received_at, e.org_id, e.project_id,
           e.api_key_id, e.user_id, e.model, e.dimensions
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
      AND {SCOPE_MATCH}
    GROUP BY 1, 2, 3
),
locked AS (
    SELECT u.tenant_id, u.budget_id, u.period_start, h.used
    FROM budget_usage AS u
    JOIN hits AS h USING (tenant_id, budget_id, period_start)
    ORDER BY u.tenant_id, u.budget_id, u.period_start
    FOR UPDATE OF u
),
-- Cost budgets: the cells the event was added to, found as the ingest statement keyed them
-- (each attribute kept only when the cell's price keys hold it; a meter's dimensions only
-- those it declares). Their first and last times stay: a wider span only makes a reader
-- price the period from the rollup store, which is exact too.
cost_hits AS (
    SELECT c.tenant_id, c.budget_id, c.period_start, c.meter_id, c.org_id, c.project_id,
           c.api_key_id, c.user_id, c.model, c.dimensions, c.price_keys,
           sum(coalesce(q.quantity, 0)) AS sum, count(*) AS count
    FROM quantities AS q
    JOIN budgets AS b ON b.tenant_id = q.tenant_id AND b.limit_cost IS NOT NULL
    JOIN tenants AS t ON t.id = b.tenant_id
    JOIN meters AS m ON m.id = q.meter_id
    JOIN budget_cost_cells AS c
      ON c.tenant_id = b.tenant_id AND c.budget_id = b.id
     AND c.period_start = date_trunc(b.period, q.ts, t.timezone) AND c.meter_id = q.meter_id
     AND c.org_id = CASE WHEN 'org_id' = ANY(c.price_keys) THEN coalesce(q.org_id, '') ELSE '' END
     AND c.project_id
         = CASE WHEN 'project_id' = ANY(c.price_keys) THEN coalesce(q.project_id, '') ELSE '' END
     AND c.api_key_id
         = CASE WHEN 'api_key_id' = ANY(c.price_keys) THEN coalesce(q.api_key_id, '') ELSE '' END
     AND c.user_id
         = CASE WHEN 'user_id' = ANY(c.price_keys) THEN coalesce(q.user_id, '') ELSE '' END
     AND c.model = CASE WHEN 'model' = ANY(c.price_keys) THEN coalesce(q.model, '') ELSE '' END
     AND c.dimensions = coalesce(
         (SELECT jsonb_object_agg(d.key, d.value) FROM jsonb_each(q.dimensions) AS d
          WHERE d.key = ANY(c.price_keys) AND d.key = ANY(m.dimensions)), '{{}}'::jsonb)
    WHERE q.ts >= date_trunc(b.period, b.created_at, t.timezone)
      AND b.created_at <= q.received_at
      AND {SCOPE_MATCH}
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
),
cost_withdrawn AS (
    UPDATE budget_cost_cells AS c
    SET sum = c.sum - h.sum, count = c.count - h.count
    FROM cost_hits AS h
    WHERE (c.tenant_id, c.budget_id, c.period_start, c.meter_id, c.org_id, c.project_id,
           c.api_key_id, c.user_id, c.model, c.dimensions, c.price_keys)
        = (h.tenant_id, h.budget_id, h.period_start, h.meter_id, h.org_id, h.project_id,
           h.api_key_id, h.user_id, h.model, h.dimensions, h.price_keys)
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
