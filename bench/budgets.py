"""Budgets and webhooks benchmark (make bench-budgets).

Check: GET /v1/budgets/check for a tenant with 1,000 budgets (one per API key) while P1
ingestion (batches of 1000 over HTTP) runs for the same tenants: p50/p99 through HTTP (goal:
p99 <= 10 ms), and P1's rate with those budgets against its rate before they existed (goal:
>= 80 %). With --cost the budgets cap spend instead (`limit: {cost}`), every meter priced per
model (one list price each, input tokens of one model graduated, one tenant override): a
check prices the key's cells, and every ingest statement records the thresholds of the cost
budgets it touched.
Fan-out: N budget.threshold_reached messages written to the outbox at once, posted to a local
receiver by the service's senders: messages per second and p99 delay from the outbox write to
the receiver (goal: p99 <= 2 s).

The load generator, the receiver, the service and PostgreSQL share the machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from bench.common import bench_server_url, fresh_database, percentile, running_service
from bench.ingest import METERS, MODELS, SECRET, make_event, p1_http, seed
from bench.receiver import Receiver
from service.db.url import asyncpg_dsn
from service.tenants.auth import generate_key

BUDGET_TENANT = "tenant00"


async def add_prices(database_url: str) -> None:
    """A list price per meter and model (per 1M tokens, per 1000 calls); gpt-4o input tokens
    graduated; BUDGET_TENANT's own price of gpt-4o-mini output tokens."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        for n, model in enumerate(MODELS):
            for name, aggregation, _ in METERS:
                per_units = 1000 if aggregation == "count" else 1_000_000
                tiers = "[]"
                if name == "input_tokens" and model == "gpt-4o":
                    tiers = json.dumps(
                        [
                            {"up_to": "100000000", "unit_amount": "2.5"},
                            {"up_to": None, "unit_amount": "2"},
                        ]
                    )
                await connection.execute(
                    "INSERT INTO prices (id, meter_id, unit_amount, per_units, match, tiers, "
                    "effective_from) SELECT gen_random_uuid(), id, $2, $3, $4::jsonb, "
                    "$5::jsonb, '2020-01-01T00:00:00Z' FROM meters WHERE event_name = $1",
                    name,
                    1 + n,
                    per_units,
                    json.dumps({"model": model}),
                    tiers,
                )
        await connection.execute(
            "INSERT INTO prices (id, meter_id, tenant_id, unit_amount, per_units, match, "
            "effective_from) SELECT gen_random_uuid(), id, $1, 0.5, 1000000, "
            "'{\"model\": \"gpt-4o-mini\"}', '2020-01-01T00:00:00Z' FROM meters "
            "WHERE event_name = 'output_tokens'",
            BUDGET_TENANT,
        )
    finally:
        await connection.close()


async def add_budgets(database_url: str, count: int, cost: bool = False) -> str:
    """`count` budgets of BUDGET_TENANT on input_tokens (with `cost`: on spend), one per
    api_key_id; a read key."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        if cost:
            await connection.execute(
                """
                INSERT INTO budgets (tenant_id, id, name, period, limit_cost, api_key_id,
                                     thresholds_percent)
                SELECT $1, gen_random_uuid(), 'key' || g, 'day', 1e12, 'key' || g,
                       ARRAY[80, 100]
                FROM generate_series(0, $2 - 1) AS g
                """,
                BUDGET_TENANT,
                count,
            )
        else:
            await connection.execute(
                """
                INSERT INTO budgets (tenant_id, id, name, period, meter_id, aggregation,
                                     limit_quantity, api_key_id, thresholds_percent)
                SELECT $1, gen_random_uuid(), 'key' || g, 'day', m.id, m.aggregation, 1e12,
                       'key' || g, ARRAY[80, 100]
                FROM generate_series(0, $2 - 1) AS g, meters AS m
                WHERE m.event_name = 'input_tokens'
                """,
                BUDGET_TENANT,
                count,
            )
        key = generate_key(SECRET)
        await connection.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, scopes) "
            "VALUES (gen_random_uuid(), 'gateway', $1, $2, '{read}')",
            key.prefix,
            key.key_hash,
        )
        return key.plaintext
    finally:
        await connection.close()


def bodies(rng: random.Random, prefix: str, batches: int) -> list[bytes]:
    now = datetime.now(UTC)
    return [
        json.dumps(
            {"events": [make_event(rng, f"{prefix}-{b}-{i}", now) for i in range(1000)]}
        ).encode()
        for b in range(batches)
    ]


async def _checks(
    port: int,
    read_key: str,
    budgets: int,
    stop: Callable[[], bool],
    count: int,
    interval: float = 0.0,
) -> list[float]:
    """Check latencies (s), one request at a time over one keep-alive connection, until `stop()`
    (or `count` checks when count > 0), starting one every `interval` seconds at most. A bare
    HTTP/1.1 client: httpx's own CPU per request (about 1.5 ms here) would be most of what is
    measured."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decoder = msgspec.json.Decoder(CheckAnswer)
    samples: list[float] = []
    n = 0
    try:
        while (n < count) if count else not stop():
            path = f"/v1/budgets/check?tenant_id={BUDGET_TENANT}&api_key_id=key{n % budgets}"
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {read_key}\r\n\r\n"
            ).encode()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            samples.append(time.perf_counter() - started)
            if interval:
                await asyncio.sleep(max(0.0, interval - samples[-1]))
            if not head.startswith(b"HTTP/1.1 200") or len(decoder.decode(body).budgets) != 1:
                raise RuntimeError(f"check answered {head[:40]!r}: {body[:300]!r}")
            n += 1
    finally:
        writer.close()
    return samples


class CheckAnswer(msgspec.Struct):
    budgets: list[dict[str, Any]]


def _checker(port: int, read_key: str, budgets: int, rate: float, stop: Any, out: Any) -> None:
    """The checking gateway: a process of its own (the load generator's event loop would
    otherwise delay the checks it times), `rate` checks a second until `stop` is set."""
    out.send(asyncio.run(_checks(port, read_key, budgets, stop.is_set, 0, 1 / rate)))


async def checks_during(
    port: int,
    read_key: str,
    ingest: asyncio.Task[float] | None,
    budgets: int,
    count: int = 0,
    rate: float = 100.0,
) -> list[float]:
    """Check latencies (s) until the ingest task ends, `rate` a second from another process;
    without one, `count` checks from this one, back to back (nothing else runs then)."""
    if ingest is None:
        return await _checks(port, read_key, budgets, lambda: False, count)
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_checker, args=(port, read_key, budgets, rate, stop, send))
    process.start()
    await ingest
    stop.set()
    samples: list[float] = await asyncio.to_thread(receive.recv)
    process.join()
    return samples


async def check_under_load(
    args: argparse.Namespace, database_url: str, key: str
) -> tuple[float, float, list[float], list[float]]:
    rng = random.Random(7)
    before = await p1_http(args.port, key, bodies(rng, "before", args.batches), args.connections)
    if args.cost:
        await add_prices(database_url)
    read_key = await add_budgets(database_url, args.budgets, args.cost)
    idle = await checks_during(args.port, read_key, None, args.budgets, count=500)
    ingest = asyncio.create_task(
        p1_http(args.port, key, bodies(rng, "after", args.batches), args.connections)
    )
    samples = await checks_during(args.port, read_key, ingest, args.budgets, rate=args.check_rate)
    return before, await ingest, idle, samples


async def fan_out(database_url: str, messages: int, receiver: Receiver) -> tuple[float, float]:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        endpoint = await connection.fetchval(
            "INSERT INTO webhook_endpoints (id, url, event_types, secret) "
            "VALUES (gen_random_uuid(), $1, '{budget.threshold_reached}', $2) RETURNING id",
            receiver.url,
            "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        await connection.execute(
            """
            INSERT INTO webhook_deliveries
                (tenant_id, id, endpoint_id, type, payload, status, next_attempt_at, created_at)
            SELECT $1, gen_random_uuid(), $2, 'budget.threshold_reached',
                   jsonb_build_object('type', 'budget.threshold_reached', 'timestamp', now(),
                                      'data', jsonb_build_object('n', g))::text,
                   'pending', now(), now()
            FROM generate_series(1, $3) AS g
            """,
            BUDGET_TENANT,
            endpoint,
            messages,
        )
        written = time.time()
        while (arrived := receiver.count()) < messages:
            if time.time() - written > 120:
                errors = await connection.fetch(
                    "SELECT a->>'error' AS error, count(*) FROM webhook_deliveries, "
                    "jsonb_array_elements(attempts) AS a WHERE a->>'error' IS NOT NULL "
                    "GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
                )
                raise RuntimeError(
                    f"{arrived} of {messages} delivered in 120 s; failed attempts: "
                    + "; ".join(f"{row['count']} x {row['error']}" for row in errors)
                )
            await asyncio.sleep(0.05)
        created = {
            str(row["id"]): row["created_at"].timestamp()
            for row in await connection.fetch(
                "SELECT id, created_at FROM webhook_deliveries WHERE endpoint_id = $1", endpoint
            )
        }
    finally:
        await connection.close()
    arrivals = receiver.arrivals()
    delays = [arrivals[i] - created[i] for i in created]
    elapsed = max(arrivals.values()) - written
    return messages / elapsed, percentile(delays, 99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=100, help="P1 batches of 1000 events")
    parser.add_argument("--connections", type=int, default=4, help="P1 concurrent connections")
    parser.add_argument("--messages", type=int, default=10_000, help="webhook fan-out")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--port", type=int, default=8792)
    parser.add_argument(
        "--only", choices=("check", "fan-out"), help="run one of the two parts (default: both)"
    )
    parser.add_argument("--cost", action="store_true", help="cost budgets instead of tokens")
    parser.add_argument(
        "--check-rate", type=float, default=100.0, help="checks a second during P1 (at most)"
    )
    args = parser.parse_args()
    kind = "cost budgets" if args.cost else "budgets"

    receiver = Receiver()
    with fresh_database(bench_server_url()) as database_url:
        key, _ = asyncio.run(seed(database_url))
        env = {
            "METERING_SECRET_KEY": SECRET,
            "METERING_WEBHOOK_ALLOW_PRIVATE": "true",
            "METERING_ROLLUP_FOLD_INTERVAL_SECONDS": "0",
        }
        with running_service(database_url, args.port, args.workers, **env):
            if args.only != "fan-out":
                check(args, database_url, key, kind)
            if args.only != "check":
                rate, p99 = asyncio.run(fan_out(database_url, args.messages, receiver))
                print(
                    f"Webhook fan-out: {args.messages:,} messages, {rate:,.0f} delivered/s, "
                    f"p99 delay from the outbox write {p99:.2f} s (goal <= 2 s)"
                )
    receiver.close()


def check(args: argparse.Namespace, database_url: str, key: str, kind: str) -> None:
    before, after, idle, samples = asyncio.run(check_under_load(args, database_url, key))
    print(
        f"Check ({args.budgets} {kind}, one per key), no other load: "
        f"p50 {percentile(idle, 50) * 1000:.2f} ms, "
        f"p99 {percentile(idle, 99) * 1000:.2f} ms"
    )
    print(
        f"Check ({args.budgets} {kind}, one per key) during P1: {len(samples):,} checks "
        f"(up to {args.check_rate:g}/s from another process), "
        f"p50 {percentile(samples, 50) * 1000:.2f} ms, "
        f"p99 {percentile(samples, 99) * 1000:.2f} ms (goal p99 <= 10 ms)"
    )
    print(
        f"P1 HTTP: {before:,.0f} events/s before the {kind}, {after:,.0f} with them "
        f"and the checks: {after / before:.0%} (goal >= 80 %)"
    )


if __name__ == "__main__":
    main()
