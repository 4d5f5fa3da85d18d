"""Retention benchmark (make bench-retention): batched deletes of expired raw events (DESIGN §6).

Seeds N expired raw events (COPY) into a fresh database, migrated to head, on the server of
BENCH_DATABASE_URL, else DATABASE_URL, else the embedded PostgreSQL; then times the retention
job deleting them with the service's batch size and pause (--batch-size, --pause to change),
and checks that exactly the expired events went. The database is dropped at the end (--keep
keeps it).

With --with-ingest, the P1 ingest load of the ingestion benchmark's direct path (batches of
1000 events stored with the service's own ingest SQL, events and rollups in one transaction,
through asyncpg on 4 connections, not the HTTP API) runs alone, then during the purge, then
alone again, and its rate is printed for each: what the purge costs writers of the same tables.
The load runs in this process, on the purge's event loop.

    make bench-retention ARGS="--events 1000000 --with-ingest"
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python -m bench.retention --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bench.common import bench_server_url, fresh_database
from service.common.logging import configure_logging
from service.db.url import asyncpg_dsn
from service.events.repository import EventRow, store_events
from service.retention.schemas import RetentionReport
from service.retention.service import run_retention
from service.settings import Settings

EVENT_COLUMNS = ["tenant_id", "meter_id", "idempotency_key", "payload_hash", "value", "ts", "model"]
LIVE_TENANTS = [f"live-{index}" for index in range(4)]
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3-70b")


def event_records(
    tenants: list[str], count: int, start: datetime, end: datetime, prefix: str
) -> Iterator[tuple[Any, ...]]:
    """`count` events spread evenly over [start, end), in time order with the tenants
    interleaved, as ingestion lays them out on disk."""
    step = (end - start) / max(count, 1)
    payload_hash = hashlib.sha256(b"bench").digest()
    for index in range(count):
        yield (
            tenants[index % len(tenants)],
            1,
            f"{prefix}-{index}",
            payload_hash,
            Decimal(index % 1000),
            start + step * index,
            MODELS[index % len(MODELS)],
        )


async def seed(url: str, args: argparse.Namespace, now: datetime) -> list[str]:
    tenants = [f"bench-{index}" for index in range(args.tenants)]
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.executemany(
            "INSERT INTO tenants (id, name, currency, timezone) VALUES ($1, $1, 'USD', 'UTC')",
            [(tenant,) for tenant in [*tenants, *LIVE_TENANTS]],
        )
        cutoff = now - timedelta(days=args.retention_days)
        started = time.perf_counter()
        for records in (
            event_records(tenants, args.events, cutoff - timedelta(days=365), cutoff, "old"),
            event_records(tenants, args.fresh, cutoff + timedelta(days=1), now, "new"),
        ):
            await connection.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
        seconds = time.perf_counter() - started
        total = args.events + args.fresh
        print(
            f"seeded {args.events:,} expired + {args.fresh:,} newer events for {len(tenants)} "
            f"tenants in {seconds:.1f} s ({total / seconds:,.0f} rows/s, COPY)"
        )
        # As in steady state, where autovacuum has seen the table.
        await connection.execute("VACUUM ANALYZE events")
    finally:
        await connection.close()
    return tenants


class IngestLoad:
    """The P1 direct ingest load: `workers` connections, each storing batches of `batch` new
    events (events and their rollups, one transaction per batch, the service's ingest SQL) for
    the live tenants, as fast as they can."""

    def __init__(self, url: str, workers: int, batch: int) -> None:
        self.url = url
        self.workers = workers
        self.batch = batch
        self.inserted = 0
        self._keys = itertools.count()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._stop.clear()
        connections = [await asyncpg.connect(asyncpg_dsn(self.url)) for _ in range(self.workers)]
        self._tasks = [asyncio.create_task(self._write(connection)) for connection in connections]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def _rows(self) -> list[EventRow]:
        now = datetime.now(UTC)
        payload_hash = hashlib.sha256(b"live").digest()
        rows = []
        for _ in range(self.batch):
            n = next(self._keys)
            rows.append(
                EventRow(
                    tenant_id=LIVE_TENANTS[n % len(LIVE_TENANTS)],
                    meter_id=1 + n % 3,
                    idempotency_key=f"live-{n}",
                    payload_hash=payload_hash,
                    value=Decimal(n % 5000),
                    ts=now - timedelta(seconds=n % 3600),
                    org_id=None,
                    project_id=f"proj{n % 20}",
                    api_key_id=f"key{n % 50}",
                    user_id=f"user{n % 1000}",
                    model=MODELS[n % len(MODELS)],
                    dimensions_json="{}",
                    metadata_json=None,
                )
            )
        return rows

    async def _write(self, connection: Any) -> None:
        try:
            while not self._stop.is_set():
                rows = self._rows()
                async with connection.transaction():
                    await store_events(connection, rows)
                self.inserted += len(rows)
        finally:
            await connection.close()

    async def rate_while(self, seconds: float) -> float:
        """Events/s stored over the next `seconds`, the load running alone."""
        await self.start()
        before = self.inserted
        await asyncio.sleep(seconds)
        inserted = self.inserted - before
        await self.stop()
        return inserted / seconds


async def purge(url: str, args: argparse.Namespace, now: datetime) -> tuple[RetentionReport, float]:
    settings = Settings(
        database_url=url,
        json_logs=False,
        log_level="WARNING",
        retention_days=args.retention_days,
        retention_batch_size=args.batch_size,
        retention_pause_seconds=args.pause,
    )
    configure_logging(settings)
    started = time.perf_counter()
    report = await run_retention(settings, url, now=now)
    return report, time.perf_counter() - started


async def bench(url: str, args: argparse.Namespace) -> None:
    now = datetime.now(UTC)
    tenants = await seed(url, args, now)
    load = IngestLoad(url, args.ingest_workers, args.ingest_batch) if args.with_ingest else None
    alone_before = alone_after = during = 0.0
    if load is not None:
        alone_before = await load.rate_while(args.ingest_seconds)
        await load.start()
    inserted_before = load.inserted if load else 0
    print(f"purge: batches of {args.batch_size:,}, pause {args.pause} s between full batches")
    report, seconds = await purge(url, args, now)
    if load is not None:
        during = (load.inserted - inserted_before) / seconds
        await load.stop()
        alone_after = await load.rate_while(args.ingest_seconds)

    pauses = sum(tenant.rows // args.batch_size for tenant in report.tenants) * args.pause
    print(
        f"deleted {report.rows:,} rows in {report.batches:,} batches, {seconds:.2f} s: "
        f"{report.rows / seconds:,.0f} rows/s (wall clock, pauses included)"
    )
    if pauses:
        print(
            f"  {report.rows / max(seconds - pauses, 1e-9):,.0f} rows/s while deleting "
            f"(~{pauses:.1f} s of pauses left out)"
        )
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        cutoff = now - timedelta(days=args.retention_days)
        left = await connection.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = ANY($1) AND ts < $2", tenants, cutoff
        )
        kept = await connection.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = ANY($1)", tenants
        )
        live_events = await connection.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = ANY($1)", LIVE_TENANTS
        )
        live_rolled = await connection.fetchval(
            "SELECT coalesce(sum(count), 0) FROM rollups WHERE tenant_id = ANY($1)", LIVE_TENANTS
        )
    finally:
        await connection.close()
    print(
        f"check: {left:,} expired events left, {kept:,} newer events kept (expected {args.fresh:,})"
    )
    if load is not None:
        alone = (alone_before + alone_after) / 2
        print(
            f"P1 ingest load ({args.ingest_workers} connections x batches of {args.ingest_batch}, "
            "service ingest SQL via asyncpg, not HTTP):\n"
            f"  alone, {args.ingest_seconds:g} s before the purge: {alone_before:,.0f} events/s\n"
            f"  during the purge:              {during:,.0f} events/s "
            f"({during / alone:.0%} of the mean of before and after)\n"
            f"  alone, {args.ingest_seconds:g} s after the purge:  {alone_after:,.0f} events/s"
        )
    if load is not None:
        print(f"check: {live_events:,} events stored by the load, rollups count {live_rolled:,}")
    if left or kept != args.fresh or report.rows != args.events or live_events != live_rolled:
        sys.exit("FAILED: retention did not delete exactly the expired events")


def parse_args() -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000_000, help="expired events to seed")
    parser.add_argument("--fresh", type=int, default=None, help="newer events (default N/10)")
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--retention-days", type=int, default=defaults.retention_days)
    parser.add_argument("--batch-size", type=int, default=defaults.retention_batch_size)
    parser.add_argument("--pause", type=float, default=defaults.retention_pause_seconds)
    parser.add_argument("--with-ingest", action="store_true", help="measure a concurrent load")
    parser.add_argument("--ingest-workers", type=int, default=4)
    parser.add_argument("--ingest-batch", type=int, default=1000)
    parser.add_argument("--ingest-seconds", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()
    if args.fresh is None:
        args.fresh = args.events // 10
    return args


def main() -> None:
    args = parse_args()
    with fresh_database(bench_server_url(), keep=args.keep) as url:
        parsed = make_url(url)
        print(f"retention benchmark: database {parsed.database} on {parsed.host}:{parsed.port}")
        asyncio.run(bench(url, args))


if __name__ == "__main__":
    main()
