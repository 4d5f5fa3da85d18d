"""Python client benchmark (make bench-client).

One client process (this one) with one Tracker, recording events as fast as its recording
threads can into a service with 2 workers, sustained over the whole run: events/s from the
first record to the end of close() (every event answered), and this process's CPU time per
1,000 events and in cores (CPU seconds over wall seconds). Goals: >= 30,000 events/s, under
one core. The service and PostgreSQL run on the same machine, so they compete with the client
for its cores; the events stored are checked against the counters afterwards.

Each event carries what a gateway sends: a user, an API key, a model and a dimension."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import threading
import time

import asyncpg

from bench.common import bench_server_url, fresh_database, running_service
from metering_client import Tracker
from service.db.url import asyncpg_dsn
from service.tenants.auth import generate_key

SECRET = "bench-secret"
GOAL_EVENTS_PER_SECOND = 30_000
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-70b", "mistral-large"]
REGIONS = ["eu", "us", "apac"]


async def seed(database_url: str) -> str:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute(
            "INSERT INTO tenants (id, name, currency, timezone) "
            "VALUES ('acme', 'Acme', 'USD', 'UTC')"
        )
        await connection.execute(
            "INSERT INTO meters (event_name, name, aggregation, dimensions, currency) "
            "VALUES ('input_tokens', 'Input tokens', 'sum', '{region}', 'USD')"
        )
        key = generate_key(SECRET)
        await connection.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, scopes) "
            "VALUES (gen_random_uuid(), 'bench', $1, $2, '{ingest}')",
            key.prefix,
            key.key_hash,
        )
        return key.plaintext
    finally:
        await connection.close()


async def count_stored(database_url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return int(await connection.fetchval("SELECT count(*) FROM events"))
    finally:
        await connection.close()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(base_url: str, key: str, events: int, threads: int) -> tuple[float, float, Tracker]:
    tracker = Tracker(base_url, key, tenant_id="acme")
    per_thread = events // threads

    def record(number: int) -> None:
        for event in range(per_thread):
            tracker.record(
                "input_tokens",
                100 + event % 900,
                user_id=f"user-{event % 1000}",
                api_key_id=f"key-{number}",
                model=MODELS[event % len(MODELS)],
                dimensions={"region": REGIONS[event % len(REGIONS)]},
            )

    workers = [threading.Thread(target=record, args=(n,)) for n in range(threads)]
    cpu_before, started = cpu_seconds(), time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    tracker.close()
    return time.perf_counter() - started, cpu_seconds() - cpu_before, tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--threads", type=int, default=2, help="threads calling record()")
    parser.add_argument("--workers", type=int, default=2, help="service worker processes")
    parser.add_argument("--port", type=int, default=8793)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    events = args.events - args.events % args.threads
    with fresh_database(bench_server_url()) as database_url:
        key = asyncio.run(seed(database_url))
        env = {"METERING_SECRET_KEY": SECRET, "METERING_JSON_LOGS": "false"}
        with running_service(database_url, args.port, args.workers, **env):
            base = f"http://127.0.0.1:{args.port}"
            # Warm up the service's and the client's code paths and connections.
            run(base, key, 5_000, 1)
            seconds, cpu, tracker = run(base, key, events, args.threads)
        stored = asyncio.run(count_stored(database_url))

    stats = tracker.stats
    rate = events / seconds
    print(
        f"client: {events:,} events from {args.threads} recording threads, one Tracker "
        f"(batches of {tracker.options.max_batch}, {tracker.max_in_flight} in flight), "
        f"service with {args.workers} workers, {os.cpu_count()} CPUs on this machine"
    )
    met = "met" if rate >= GOAL_EVENTS_PER_SECOND else "NOT met"
    print(
        f"  sustained: {rate:,.0f} events/s over {seconds:.1f} s "
        f"(goal >= {GOAL_EVENTS_PER_SECOND:,}: {met})"
    )
    print(
        f"  client CPU: {cpu * 1000 / events * 1000:.1f} ms per 1,000 events, "
        f"{cpu / seconds:.2f} cores (goal < 1: {'met' if cpu / seconds < 1 else 'NOT met'})"
    )
    print(
        f"  counters: sent {stats.sent:,}, duplicates {stats.duplicates}, rejected "
        f"{stats.rejected}, dropped {stats.dropped}, retries {stats.retries}; "
        f"stored {stored:,} (warm-up 5,000 included)"
    )
    if stats.sent != events or stored != events + 5_000:
        raise SystemExit("the events stored do not match the events recorded")


if __name__ == "__main__":
    main()
