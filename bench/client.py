"""Python client benchmark (make bench-client).

One client process (this one) with one Tracker, recording events as fast as its recording
threads can into a service with 2 workers, sustained over the whole run: events/s from the
first record to the end of close() (every event answered), and this process's CPU time per
1,000 events and in cores (CPU seconds over wall seconds). Goals: >= 30,000 events/s, under
one core. Then the same client against a stub that accepts every batch without storing it:
what the client alone can push. The service and PostgreSQL run on the same machine, so they
compete with the client for its cores; the events stored are checked against the counters.

Each event carries what a gateway sends: a user, an API key, a model and a dimension; with
--llm, each is one LLM call (record_llm_call: one event with 7 meters' quantities)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
import time

import asyncpg
import httpx
import msgspec

from bench.common import bench_server_url, fresh_database, running_service
from metering_client import Tracker
from service.db.url import asyncpg_dsn
from service.tenants.auth import generate_key

SECRET = "bench-secret"
GOAL_EVENTS_PER_SECOND = 30_000
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-70b", "mistral-large"]
REGIONS = ["eu", "us", "apac"]


async def seed(database_url: str) -> tuple[str, str]:
    """Tenant acme, a sum meter with a dimension; an ingest key and an admin key."""
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
        keys = []
        for scope in ("ingest", "admin"):
            key = generate_key(SECRET)
            await connection.execute(
                "INSERT INTO api_keys (id, name, prefix, key_hash, scopes) "
                "VALUES (gen_random_uuid(), 'bench', $1, $2, $3)",
                key.prefix,
                key.key_hash,
                [scope],
            )
            keys.append(key.plaintext)
        return keys[0], keys[1]
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


def run(
    base_url: str, key: str, events: int, threads: int, llm: bool
) -> tuple[float, float, Tracker]:
    tracker = Tracker(base_url, key, tenant_id="acme")
    per_thread = events // threads

    def record(number: int) -> None:
        for event in range(per_thread):
            if llm:
                tracker.record_llm_call(
                    "openai",
                    MODELS[event % len(MODELS)],
                    input_tokens=1000 + event % 900,
                    output_tokens=200 + event % 50,
                    cache_read_tokens=event % 3 * 1000,
                    streamed=event % 2 == 0,
                    latency_ms=500 + event % 700,
                    ttft_ms=80 + event % 40,
                    user_id=f"user-{event % 1000}",
                    api_key_id=f"key-{number}",
                )
                continue
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


class _Envelope(msgspec.Struct):
    events: list[msgspec.Raw]


def serve_stub(port: int) -> None:
    """An ingest endpoint that accepts every batch without storing it: what the client alone
    can push, with the service and PostgreSQL out of the way."""
    answers: dict[int, bytes] = {}

    def answer(count: int) -> bytes:
        if count not in answers:
            results = [{"index": i, "status": "accepted", "id": str(i)} for i in range(count)]
            body = msgspec.json.encode(
                {"accepted": count, "duplicates": 0, "rejected": 0, "results": results}
            )
            head = (
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n"
            )
            answers[count] = head.encode() + body
        return answers[count]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                writer.write(answer(len(msgspec.json.decode(body, type=_Envelope).events)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def client_alone(events: int, threads: int, llm: bool, port: int) -> tuple[float, float]:
    stub = subprocess.Popen([sys.executable, "-m", "bench.client", "--serve-stub", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        run(base, "stub", 5_000, 1, llm)
        seconds, cpu, _ = run(base, "stub", events, threads, llm)
        return events / seconds, cpu
    finally:
        stub.terminate()
        stub.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--threads", type=int, default=2, help="threads calling record()")
    parser.add_argument("--workers", type=int, default=2, help="service worker processes")
    parser.add_argument("--port", type=int, default=8793)
    parser.add_argument(
        "--llm", action="store_true", help="record_llm_call (one values event of 7 meters)"
    )
    parser.add_argument("--serve-stub", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stub:
        serve_stub(args.serve_stub)
        return
    logging.basicConfig(level=logging.WARNING)

    events = args.events - args.events % args.threads
    with fresh_database(bench_server_url()) as database_url:
        key, admin_key = asyncio.run(seed(database_url))
        env = {"METERING_SECRET_KEY": SECRET, "METERING_JSON_LOGS": "false"}
        with running_service(database_url, args.port, args.workers, **env):
            base = f"http://127.0.0.1:{args.port}"
            preset = httpx.post(
                f"{base}/v1/meters/presets/llm",
                json={},
                headers={"Authorization": f"Bearer {admin_key}"},
            )
            preset.raise_for_status()
            # Warm up the service's and the client's code paths and connections.
            run(base, key, 5_000, 1, args.llm)
            seconds, cpu, tracker = run(base, key, events, args.threads, args.llm)
        stored = asyncio.run(count_stored(database_url))

    stats = tracker.stats
    rate = events / seconds
    print(
        f"client: {events:,} {'LLM-call values' if args.llm else 'single-meter'} events from "
        f"{args.threads} recording threads, one Tracker "
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
    alone_rate, alone_cpu = client_alone(events, args.threads, args.llm, args.port + 1)
    print(
        f"  the client alone (a stub that accepts every batch, stores nothing): "
        f"{alone_rate:,.0f} events/s, {alone_cpu * 1000 / events * 1000:.1f} ms CPU per 1,000 "
        f"events, {alone_cpu * alone_rate / events:.2f} cores"
    )


if __name__ == "__main__":
    main()
