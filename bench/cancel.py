"""Cancel benchmark (make bench-cancel): what canceling an event costs, and what a cube reset
costs afterwards.

Data: the realistic tenant-month of `bench.datasets` (--events events over November 2026,
rollups rebuilt and folded), in a fresh database on BENCH_DATABASE_URL, else DATABASE_URL,
else the embedded PostgreSQL.

Measured in the database (the cancel's transaction without HTTP: lock and mark the event,
take it out of the rollups, service.rollups.withdraw.withdraw_event, and out of the budgets):
--cancels events picked at random, each canceled in its own transaction, split by how the
cube was kept exact: a negative delta folded at once, or a reset of the tenant-month (the
data has sum meters only; up to --resets events of a `last` meter are added, folded and
canceled to measure resets). After a reset: the month grouped by user_id
(service.rollups.query.read_rendered) before and after it, and the fold that rebuilds the
month's cells (service.rollups.fold.fold_rollups), so the next cancels meet a folded month
again.

    make bench-cancel ARGS="--events 1000000"
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import time
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from bench.common import bench_server_url, fresh_database, percentile
from bench.datasets import seed_realistic_month
from service.budgets.ingest import withdraw_event_usage
from service.db.url import asyncpg_dsn
from service.events.repository import EventRow, store_events
from service.rollups.fold import fold_rollups
from service.rollups.query import RollupQuery, read_rendered
from service.rollups.withdraw import withdraw_event


async def cancel_one(connection: asyncpg.Connection, tenant_id: str, event_id: int) -> str:
    """Cancel one event as POST /v1/events/{id}/cancel does; how the cube was kept exact."""
    async with connection.transaction():
        row = await connection.fetchrow(
            "SELECT ts FROM events WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            tenant_id,
            event_id,
        )
        await connection.execute(
            "UPDATE events SET canceled_at = now() WHERE tenant_id = $1 AND id = $2",
            tenant_id,
            event_id,
        )
        withdrawal = await withdraw_event(connection, tenant_id, event_id, row["ts"])
        await withdraw_event_usage(connection, tenant_id, event_id)
    return withdrawal.cube


async def last_meter_event(connection: asyncpg.Connection, tenant_id: str, start: datetime) -> int:
    """A new event of a `last` meter in the month, through the ingestion SQL; its id."""
    meter_id = await connection.fetchval(
        "INSERT INTO meters (event_name, name, aggregation, currency, has_events) "
        "VALUES ('bench_seats', 'Seats', 'last', 'USD', true) "
        "ON CONFLICT (event_name) DO UPDATE SET has_events = true RETURNING id"
    )
    key = f"seats-{time.time_ns()}"
    row = EventRow(
        tenant_id=tenant_id,
        meter_id=meter_id,
        idempotency_key=key,
        payload_hash=hashlib.sha256(key.encode()).digest(),
        value=Decimal(5),
        ts=start + timedelta(days=3, minutes=7),
        org_id=None,
        project_id=None,
        api_key_id=None,
        user_id="seat-user",
        model=None,
        dimensions_json="{}",
        metadata_json=None,
    )
    async with connection.transaction():
        stored = await store_events(connection, [row])
    return stored[(tenant_id, key)].id


async def month_by_user_ms(connection: asyncpg.Connection, query: RollupQuery) -> float:
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        await read_rendered(connection, query)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def summary(name: str, samples: list[float]) -> str:
    if not samples:
        return f"{name}: none"
    return (
        f"{name}: {len(samples)} cancels, p50 {percentile(samples, 50):.1f} ms, "
        f"p95 {percentile(samples, 95):.1f} ms, max {max(samples):.1f} ms"
    )


async def run(url: str, events: int, cancels: int, resets: int) -> None:
    month = await seed_realistic_month(asyncpg_dsn(url), events)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        ids = [r["id"] for r in await connection.fetch("SELECT id FROM events")]
        picked = random.Random(11).sample(ids, min(cancels, len(ids)))
        query = RollupQuery(
            tenant_id=month.tenant_id,
            meter_ids=sorted(month.meter_ids.values()),
            edges=[month.start, month.end],
            group_by=["user_id"],
        )
        samples: dict[str, list[float]] = {"unfolded": [], "delta": [], "reset": []}
        reads: list[tuple[float, float, float, float, int]] = []
        before = await month_by_user_ms(connection, query)
        for event_id in picked:
            started = time.perf_counter()
            path = await cancel_one(connection, month.tenant_id, event_id)
            samples[path].append((time.perf_counter() - started) * 1000)
            if path == "reset":
                after = await month_by_user_ms(connection, query)
                started = time.perf_counter()
                folded = await fold_rollups(connection)
                seconds = time.perf_counter() - started
                refolded = await month_by_user_ms(connection, query)
                reads.append((before, after, seconds, refolded, folded))
                before = refolded
                if len(reads) >= resets:
                    break
        # A reset for sure: an event of a `last` meter, folded, then canceled.
        for _ in range(max(0, resets - len(reads))):
            event_id = await last_meter_event(connection, month.tenant_id, month.start)
            await fold_rollups(connection)
            before = await month_by_user_ms(connection, query)
            started = time.perf_counter()
            path = await cancel_one(connection, month.tenant_id, event_id)
            samples[path].append((time.perf_counter() - started) * 1000)
            after = await month_by_user_ms(connection, query)
            started = time.perf_counter()
            folded = await fold_rollups(connection)
            seconds = time.perf_counter() - started
            reads.append(
                (before, after, seconds, await month_by_user_ms(connection, query), folded)
            )
        print(f"{events:,} events, {sum(map(len, samples.values()))} canceled:")
        print("  " + summary("negative delta folded at once", samples["delta"]))
        print("  " + summary("tenant-month of the cube reset", samples["reset"]))
        for before, after, seconds, refolded, folded in reads:
            print(
                f"  after a reset: month by user_id (read_rendered, median of 5) {before:.1f} ms "
                f"before, {after:.1f} ms after; the fold refolds {folded:,} rows in "
                f"{seconds:.1f} s; then {refolded:.1f} ms"
            )
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--cancels", type=int, default=200)
    parser.add_argument("--resets", type=int, default=1, help="resets to measure")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()
    with fresh_database(bench_server_url(), keep=args.keep) as url:
        asyncio.run(run(url, args.events, args.cancels, args.resets))


if __name__ == "__main__":
    main()
