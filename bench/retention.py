"""Retention benchmark (make bench-retention): batched deletes of expired raw events.

Seeds N expired raw events (COPY) into a fresh database, migrated to head, on the server of
BENCH_DATABASE_URL, else DATABASE_URL, else the embedded PostgreSQL; then times the retention
job deleting them with the service's batch size and pause (--batch-size, --pause to change),
and checks that exactly the expired events went. The database is dropped at the end (--keep
keeps it).

With --with-ingest, the ingestion benchmark's P1 load runs throughout: the service
(`python -m service serve`, --workers processes) takes batches of 1000 new events over HTTP
from the P1 client, which runs in a process of its own on --ingest-connections keep-alive
connections. Its rate is measured alone for --ingest-seconds, then during the purge, then alone
again. The purge runs in this process, on its own connection, as the CronJob would.

    make bench-retention ARGS="--events 1000000 --with-ingest"
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python -m bench.retention --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any

import asyncpg
import msgspec
from sqlalchemy.engine import make_url

from bench import ingest
from bench.common import bench_server_url, fresh_database, running_service
from service.common.logging import configure_logging
from service.db.url import asyncpg_dsn
from service.retention.schemas import RetentionReport
from service.retention.service import run_retention
from service.settings import Settings

EVENT_COLUMNS = ["tenant_id", "meter_id", "idempotency_key", "payload_hash", "value", "ts", "model"]
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3-70b")
# The P1 client reuses a few encoded batches, putting a fresh number into every idempotency key
# in place of this mark (as many bytes as the number, so the length does not change).
KEY_MARK = b"@@@@@@@@@@"
BATCH_TEMPLATES = 8


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
            [(tenant,) for tenant in tenants],
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
        # Write the seeded pages out now, not in a checkpoint during the measurements.
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    return tenants


def _post_until_stopped(
    port: int, key: str, connections: int, accepted: Synchronized[int], stop: Event
) -> None:
    """The P1 client (run in a process of its own): post batches of 1000 new events until
    `stop` is set, adding the events acknowledged to `accepted`."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    mark = KEY_MARK.decode()
    templates = [
        json.dumps(
            {"events": [ingest.make_event(rng, f"p1-{mark}-{i}", now) for i in range(1000)]}
        ).encode()
        for _ in range(BATCH_TEMPLATES)
    ]
    head = ingest.batch_request_head(key)
    decoder = msgspec.json.Decoder(ingest.BatchCounts)
    numbers = itertools.count()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not stop.is_set():
                number = next(numbers)
                body = templates[number % BATCH_TEMPLATES].replace(KEY_MARK, b"%010d" % number)
                stored = await ingest.post_batch(
                    reader, writer, ingest.batch_request(head, body), decoder
                )
                if stored != 1000:
                    raise RuntimeError(f"batch {number}: {stored} of 1000 events accepted")
                with accepted.get_lock():
                    accepted.value += stored
        finally:
            writer.close()

    async def post_all() -> None:
        await asyncio.gather(*(worker() for _ in range(connections)))

    asyncio.run(post_all())


class IngestLoad:
    """The ingestion benchmark's P1 load against a running service, from another process."""

    def __init__(self, port: int, key: str, connections: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.accepted: Synchronized[int] = context.Value("q", 0)
        self.stop_event = context.Event()
        self.process = context.Process(
            target=_post_until_stopped,
            args=(port, key, connections, self.accepted, self.stop_event),
            daemon=True,
        )

    def start(self) -> None:
        self.process.start()

    def sample(self) -> tuple[float, int]:
        """(now, events acknowledged so far)."""
        return time.perf_counter(), self.accepted.value

    def rate_over(self, seconds: float) -> float:
        started, before = self.sample()
        time.sleep(seconds)
        ended, after = self.sample()
        return (after - before) / (ended - started)

    def stop(self) -> int:
        """Stop posting; the events acknowledged in all."""
        self.stop_event.set()
        self.process.join(timeout=60)
        if self.process.exitcode != 0:
            sys.exit(f"FAILED: the P1 client stopped with exit code {self.process.exitcode}")
        return self.accepted.value


async def purge(url: str, args: argparse.Namespace, now: datetime) -> tuple[RetentionReport, float]:
    settings = Settings(
        database_url=url,
        json_logs=False,
        log_level="INFO",
        retention_days=args.retention_days,
        retention_batch_size=args.batch_size,
        retention_pause_seconds=args.pause,
    )
    # INFO: the job's own progress lines (every 10 s) show how a long purge goes.
    configure_logging(settings)
    started = time.perf_counter()
    report = await run_retention(settings, url, now=now)
    return report, time.perf_counter() - started


class Stored(msgspec.Struct):
    expired_left: int
    newer_kept: int
    live_events: int
    live_rolled_up: int


async def stored(url: str, tenants: list[str], cutoff: datetime) -> Stored:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return Stored(
            expired_left=await connection.fetchval(
                "SELECT count(*) FROM events WHERE tenant_id = ANY($1) AND ts < $2",
                tenants,
                cutoff,
            ),
            newer_kept=await connection.fetchval(
                "SELECT count(*) FROM events WHERE tenant_id = ANY($1)", tenants
            ),
            live_events=await connection.fetchval(
                "SELECT count(*) FROM events WHERE tenant_id = ANY($1)", ingest.TENANTS
            ),
            live_rolled_up=int(
                await connection.fetchval(
                    "SELECT coalesce(sum(count), 0) FROM rollups WHERE tenant_id = ANY($1)",
                    ingest.TENANTS,
                )
            ),
        )
    finally:
        await connection.close()


async def wal_position(url: str) -> int:
    """The server's current WAL position, in bytes."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await connection.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))
    finally:
        await connection.close()


def run_with_ingest(
    url: str, args: argparse.Namespace, now: datetime
) -> tuple[RetentionReport, float, dict[str, float], int]:
    """The purge while the P1 load runs; the load's rates alone before, during and alone
    after, and the events it had acknowledged in all."""
    key, _ = asyncio.run(ingest.seed(url))
    env = {
        "METERING_SECRET_KEY": ingest.SECRET,
        "METERING_DB_POOL_SIZE": str(max(Settings().db_pool_size, args.ingest_connections + 4)),
    }
    with running_service(url, args.port, args.workers, **env):
        load = IngestLoad(args.port, key, args.ingest_connections)
        load.start()
        time.sleep(args.warmup)
        rates = {"before": load.rate_over(args.ingest_seconds)}
        started, before = load.sample()
        report, seconds = asyncio.run(purge(url, args, now))
        ended, after = load.sample()
        rates["during"] = (after - before) / (ended - started)
        rates["after"] = load.rate_over(args.ingest_seconds)
        acknowledged = load.stop()
    return report, seconds, rates, acknowledged


def main() -> None:
    args = parse_args()
    with fresh_database(bench_server_url(), keep=args.keep) as url:
        parsed = make_url(url)
        print(f"retention benchmark: database {parsed.database} on {parsed.host}:{parsed.port}")
        now = datetime.now(UTC)
        tenants = asyncio.run(seed(url, args, now))
        print(
            f"purge: batches of at most {args.batch_size:,}, a pause of {args.pause} s after "
            f"every {args.batch_size:,} rows"
        )
        rates: dict[str, float] = {}
        acknowledged = wal_bytes = 0
        if args.with_ingest:
            report, seconds, rates, acknowledged = run_with_ingest(url, args, now)
        else:
            wal_before = asyncio.run(wal_position(url))
            report, seconds = asyncio.run(purge(url, args, now))
            wal_bytes = asyncio.run(wal_position(url)) - wal_before
        result = asyncio.run(stored(url, tenants, now - timedelta(days=args.retention_days)))

    deleted_rate = report.rows / seconds
    pauses = report.rows // args.batch_size * args.pause
    print(
        f"deleted {report.rows:,} rows in {report.batches:,} batches, {seconds:.2f} s: "
        f"{deleted_rate:,.0f} rows/s (wall clock, pauses included)"
    )
    if pauses:
        print(
            f"  {report.rows / max(seconds - pauses, 1e-9):,.0f} rows/s while deleting "
            f"(~{pauses:.1f} s of pauses left out)"
        )
    if not args.with_ingest:
        print(
            f"WAL written: {wal_bytes / 1e6:,.0f} MB, {wal_bytes / max(report.rows, 1):.0f} bytes "
            "per deleted event"
        )
    print(
        f"check: {result.expired_left:,} expired events left, {result.newer_kept:,} newer events "
        f"kept (expected {args.fresh:,})"
    )
    failed = (
        result.expired_left != 0 or result.newer_kept != args.fresh or report.rows != args.events
    )
    if args.with_ingest:
        alone = (rates["before"] + rates["after"]) / 2
        kept = rates["during"] / alone
        print(
            f"P1 ingest over HTTP ({args.workers} service workers, {args.ingest_connections} "
            "connections x batches of 1000):\n"
            f"  alone, {args.ingest_seconds:g} s before the purge: "
            f"{rates['before']:,.0f} events/s\n"
            f"  during the purge:              {rates['during']:,.0f} events/s "
            f"({kept:.0%} of the mean of before and after, "
            f"{rates['during'] / rates['before']:.0%} of before)\n"
            f"  alone, {args.ingest_seconds:g} s after the purge:  {rates['after']:,.0f} events/s"
        )
        print(
            f"check: {acknowledged:,} events acknowledged, {result.live_events:,} stored, "
            f"rollups count {result.live_rolled_up:,}"
        )
        failed |= not acknowledged == result.live_events == result.live_rolled_up
        print(
            f"goals: >= 100,000 rows/s deleted: {'met' if deleted_rate >= 100_000 else 'NOT met'}; "
            f"ingest keeps >= 80 %: {'met' if kept >= 0.8 else 'NOT met'}"
        )
    if failed:
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
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ingest-connections", type=int, default=4)
    parser.add_argument("--ingest-seconds", type=float, default=30.0)
    parser.add_argument(
        "--warmup", type=float, default=15.0, help="seconds of load before measuring"
    )
    parser.add_argument("--port", type=int, default=8792)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()
    if args.fresh is None:
        args.fresh = args.events // 10
    return args


if __name__ == "__main__":
    main()
