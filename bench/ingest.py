"""Ingestion benchmark (make bench-ingest).

P1 batch: events/s posting batches of 1000 over HTTP, against the same events stored directly
with asyncpg through the service's own ingest SQL on the same number of connections.
P2 single: req/s and p50/p99 latency of POST /v1/events at 64 connections (wrk), durable:
every 202 was committed.
Peak RSS of each service process under P1.

P1-LLM: the same for batches of 1000 LLM calls, each one `values` event with 6 quantities
(requests, input, output, cache write 5m, cache read, latency) and 6 dimensions, in a database
of its own with the LLM preset's meters; then the bytes the events table takes per call, stored
as one values event against the 6 single events it took before values events existed.

Data: 10 tenants, 3 meters (one with a declared dimension), 50 API keys, 1000 users, 5 models.
The load generator runs on the same machine as the service and PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import msgspec

from bench.common import (
    bench_server_url,
    fresh_database,
    process_tree,
    rss_mb,
    running_service,
)
from service.db.url import asyncpg_dsn
from service.events.reference import MeterView, TenantView
from service.events.repository import EventRow, store_events
from service.events.schemas import EventIn
from service.events.validation import Limits, canonical_dimensions, canonical_hash, validate_event
from service.meters.presets import LLM_DIMENSIONS, LLM_PRESET
from service.settings import Settings
from service.tenants.auth import generate_key

SECRET = "bench-secret"
TENANTS = [f"tenant{i:02d}" for i in range(10)]
METERS = [
    ("input_tokens", "sum", ["region"]),
    ("output_tokens", "sum", []),
    ("api_calls", "count", []),
]
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-70b", "mistral-large"]
REGIONS = ["eu", "us", "apac"]


def make_event(rng: random.Random, key: str, now: datetime) -> dict[str, object]:
    name, aggregation, dims = METERS[rng.randrange(len(METERS))]
    event: dict[str, object] = {
        "tenant_id": TENANTS[rng.randrange(len(TENANTS))],
        "event_name": name,
        "idempotency_key": key,
        "timestamp": (now - timedelta(seconds=rng.randrange(3600))).isoformat(),
        "api_key_id": f"key{rng.randrange(50)}",
        "user_id": f"user{rng.randrange(1000)}",
        "model": MODELS[rng.randrange(len(MODELS))],
        "project_id": f"proj{rng.randrange(20)}",
    }
    if aggregation != "count":
        event["value"] = str(rng.randrange(1, 5000))
    if dims:
        event["dimensions"] = {"region": REGIONS[rng.randrange(len(REGIONS))]}
    return event


async def seed_tenants_and_key(database_url: str) -> tuple[str, None]:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        for tenant in TENANTS:
            await connection.execute(
                "INSERT INTO tenants (id, name, currency, timezone) VALUES ($1, $1, 'USD', 'UTC')",
                tenant,
            )
        key = generate_key(SECRET)
        await connection.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, scopes) "
            "VALUES (gen_random_uuid(), 'bench', $1, $2, '{ingest}')",
            key.prefix,
            key.key_hash,
        )
        return key.plaintext, None
    finally:
        await connection.close()


async def seed(database_url: str) -> tuple[str, dict[str, int]]:
    key, _ = await seed_tenants_and_key(database_url)
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        meter_ids = {}
        for name, aggregation, dims in METERS:
            meter_ids[name] = await connection.fetchval(
                "INSERT INTO meters (event_name, name, aggregation, dimensions, currency) "
                "VALUES ($1, $1, $2, $3, 'USD') RETURNING id",
                name,
                aggregation,
                dims,
            )
        return key, meter_ids
    finally:
        await connection.close()


def to_row(event: dict[str, object], meter_ids: dict[str, int]) -> EventRow:
    parsed = EventIn(
        event_name=str(event["event_name"]),
        idempotency_key=str(event["idempotency_key"]),
        timestamp=datetime.fromisoformat(str(event["timestamp"])),
        tenant_id=str(event["tenant_id"]),
        value=Decimal(str(event["value"])) if "value" in event else None,
        api_key_id=str(event["api_key_id"]),
        user_id=str(event["user_id"]),
        model=str(event["model"]),
        project_id=str(event["project_id"]),
        dimensions=event.get("dimensions"),  # type: ignore[arg-type]
    )
    return EventRow(
        tenant_id=str(parsed.tenant_id),
        meter_id=meter_ids[str(parsed.event_name)],
        idempotency_key=parsed.idempotency_key,
        payload_hash=canonical_hash(
            parsed,
            str(parsed.tenant_id),
            parsed.timestamp,
            canonical_dimensions(parsed.dimensions),
        ),
        value=parsed.value,
        ts=parsed.timestamp,
        org_id=None,
        project_id=parsed.project_id,
        api_key_id=parsed.api_key_id,
        user_id=parsed.user_id,
        model=parsed.model,
        dimensions_json=json.dumps(parsed.dimensions or {}, sort_keys=True),
        metadata_json=None,
    )


class BatchCounts(msgspec.Struct):
    accepted: int


def batch_request_head(key: str) -> bytes:
    """The fixed part of a POST /v1/events/batch request, up to its Content-Length."""
    return (
        "POST /v1/events/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    ).encode()


def batch_request(head: bytes, body: bytes) -> bytes:
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def post_batch(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    decoder: msgspec.json.Decoder[BatchCounts],
) -> int:
    """Send one batch request on a keep-alive connection; the number of events accepted. Only
    the status line, headers and `accepted` count of the answer are read."""
    writer.write(request)
    await writer.drain()
    status = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    payload = await reader.readexactly(length)
    if not status.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{status!r}: {payload[:300]!r}")
    return decoder.decode(payload).accepted


async def p1_http(port: int, key: str, bodies: list[bytes], connections: int) -> float:
    """Post the batches over keep-alive HTTP/1.1 connections with a minimal client: the
    requests are encoded up front and only what `post_batch` needs of each answer is read, so
    the load generator takes little of the two cores (httpx took several times more CPU per
    request than the service spent on it)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    head = batch_request_head(key)
    for body in bodies:
        queue.put_nowait(batch_request(head, body))
    accepted = 0
    decoder = msgspec.json.Decoder(BatchCounts)

    async def worker() -> None:
        nonlocal accepted
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                # Awaited first: `accepted += await ...` reads `accepted` before the await and
                # loses the other workers' counts added meanwhile.
                done = await post_batch(reader, writer, queue.get_nowait(), decoder)
                accepted += done
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    expected = len(bodies) * 1000
    if accepted != expected:
        raise RuntimeError(f"accepted {accepted} of {expected} events")
    return accepted / elapsed


async def p1_direct(database_url: str, batches: list[list[EventRow]], connections: int) -> float:
    pool = await asyncpg.create_pool(
        asyncpg_dsn(database_url), min_size=connections, max_size=connections
    )
    queue: asyncio.Queue[list[EventRow]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def worker() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            async with pool.acquire() as connection, connection.transaction():
                await store_events(connection, batch)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return sum(len(b) for b in batches) / elapsed


def alternate(
    database_url: str,
    port: int,
    key: str,
    bodies: list[bytes],
    direct_batches: list[list[EventRow]],
    connections: int,
) -> tuple[float, float]:
    """Events/s over HTTP and stored directly, the two paths alternating in two rounds each, so
    that table growth, checkpoints and autovacuum weigh on both alike; each rate is total
    events over total time."""
    half = len(bodies) // 2
    http_seconds = direct_seconds = 0.0
    for part in (slice(0, half), slice(half, None)):
        count = len(direct_batches[part]) * 1000
        rate = asyncio.run(p1_direct(database_url, direct_batches[part], connections))
        direct_seconds += count / rate
        rate = asyncio.run(p1_http(port, key, bodies[part], connections))
        http_seconds += count / rate
    total = len(bodies) * 1000
    return total / http_seconds, total / direct_seconds


class RssSampler(threading.Thread):
    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.peak: dict[int, float] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            for pid in process_tree(self.root_pid):
                self.peak[pid] = max(self.peak.get(pid, 0.0), rss_mb(pid))
            time.sleep(0.1)


WRK_SCRIPT = """
local counter = 0
local thread_id = 0
local tenants = {TENANTS}
local models = {MODELS}
function setup(thread)
  thread:set("tid", tostring(math.random(1, 1000000000)))
end
function init(args)
  thread_id = tid
  math.randomseed(tonumber(tid))
end
request = function()
  counter = counter + 1
  local body = string.format(
    '{{"tenant_id":"%s","event_name":"input_tokens","idempotency_key":"wrk-%s-%d",' ..
    '"timestamp":"{TS}","value":"%d","model":"%s","user_id":"user%d",' ..
    '"api_key_id":"key%d","dimensions":{{"region":"eu"}}}}',
    tenants[math.random(#tenants)], thread_id, counter, math.random(1, 5000),
    models[math.random(#models)], math.random(0, 999), math.random(0, 49))
  return wrk.format("POST", "/v1/events", {{["Content-Type"]="application/json",
    ["Authorization"]="Bearer {KEY}"}}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("WRK-JSON {{\\"requests\\": %d, \\"errors_status\\": %d, " ..
    "\\"p50_us\\": %d, \\"p99_us\\": %d, \\"duration_us\\": %d}}\\n",
    summary.requests, summary.errors.status, latency:percentile(50), latency:percentile(99),
    summary.duration))
end
"""


def lua_list(items: list[str]) -> str:
    return "{" + ",".join(f'"{i}"' for i in items) + "}"


def p2_single(base: str, key: str, connections: int, seconds: int) -> dict[str, float] | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("  P2 needs wrk (Debian: apt-get install wrk); skipped")
        return None
    script = WRK_SCRIPT.format(
        TENANTS=lua_list(TENANTS),
        MODELS=lua_list(MODELS),
        TS=(datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        KEY=key,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        path = handle.name
    try:
        output = subprocess.run(
            [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "-s", path, base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        Path(path).unlink()
    match = re.search(r"WRK-JSON (\{.*\})", output)
    if not match:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    figures = json.loads(match.group(1))
    return {
        "requests": figures["requests"],
        "non_2xx": figures["errors_status"],
        "rps": figures["requests"] / (figures["duration_us"] / 1e6),
        "p50_ms": figures["p50_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
    }


LLM_QUANTITIES = [
    "llm_requests",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_read_tokens",
    "latency_ms",
]
PROVIDERS = {"gpt-4o": "openai", "gpt-4o-mini": "openai", "claude-sonnet": "anthropic"}
LLM_MODELS = list(PROVIDERS)


def make_llm_call(rng: random.Random, key: str, now: datetime) -> dict[str, object]:
    """One LLM gateway record as one values event: 6 quantities, 6 dimensions."""
    model = LLM_MODELS[rng.randrange(len(LLM_MODELS))]
    failed = rng.random() < 0.02
    return {
        "tenant_id": TENANTS[rng.randrange(len(TENANTS))],
        "idempotency_key": key,
        "timestamp": (now - timedelta(seconds=rng.randrange(3600))).isoformat(),
        "values": {
            "llm_requests": None,
            "input_tokens": rng.randrange(1, 8000),
            "output_tokens": 0 if failed else rng.randrange(1, 2000),
            "cache_write_5m_tokens": rng.choice((0, 0, 0, rng.randrange(1, 4000))),
            "cache_read_tokens": rng.choice((0, rng.randrange(1, 20000))),
            "latency_ms": rng.randrange(80, 20000),
        },
        "api_key_id": f"key{rng.randrange(50)}",
        "user_id": f"user{rng.randrange(1000)}",
        "model": model,
        "project_id": f"proj{rng.randrange(20)}",
        "dimensions": {
            "provider": PROVIDERS[model],
            "requested_model": model,
            "operation": "chat",
            "status": "error" if failed else "success",
            "streamed": rng.random() < 0.7,
            "user_tier": rng.randrange(1, 4),
        },
    }


def fan_out(call: dict[str, object]) -> list[dict[str, object]]:
    """The same call as it had to be sent before values events: one event per quantity."""
    values: dict[str, object] = call["values"]  # type: ignore[assignment]
    events = []
    for name, value in values.items():
        event = {k: v for k, v in call.items() if k != "values"}
        event["event_name"] = name
        event["idempotency_key"] = f"{call['idempotency_key']}-{name}"
        if value is not None:
            event["value"] = value
        events.append(event)
    return events


async def seed_llm(database_url: str) -> tuple[str, dict[str, MeterView]]:
    """Tenants, the LLM preset's meters (as the preset creates them) and an ingest key."""
    key, _ = await seed_tenants_and_key(database_url)
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        views = {}
        for meter in LLM_PRESET:
            meter_id = await connection.fetchval(
                "INSERT INTO meters (event_name, name, aggregation, dimensions, currency, "
                "billable, unit) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                meter.event_name,
                meter.name,
                meter.aggregation,
                list(LLM_DIMENSIONS),
                "USD" if meter.priced else None,
                meter.billable,
                meter.unit,
            )
            views[meter.event_name] = MeterView(
                id=meter_id,
                event_name=meter.event_name,
                aggregation=meter.aggregation,
                dimensions=frozenset(LLM_DIMENSIONS),
                status="active",
                has_events=False,
            )
        return key, views
    finally:
        await connection.close()


def validated(event: dict[str, object], meters: dict[str, MeterView]) -> EventRow:
    """An event checked and turned into a row by the service's own validation."""
    parsed = msgspec.json.decode(msgspec.json.encode(event), type=EventIn)
    limits = Limits(
        now=datetime.now(UTC), late_arrival=timedelta(days=30), future_tolerance=timedelta(0)
    )
    tenant_id = str(parsed.tenant_id)
    row = validate_event(
        parsed,
        tenant_id=tenant_id,
        tenant=TenantView(id=tenant_id, status="active"),
        meters=meters,
        limits=limits,
    )
    assert isinstance(row, EventRow), row
    return row


async def events_table_bytes(database_url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute("VACUUM ANALYZE events")
        return int(await connection.fetchval("SELECT pg_total_relation_size('events')"))
    finally:
        await connection.close()


def run_llm(args: argparse.Namespace, server: str) -> None:
    rng = random.Random(7)
    now = datetime.now(UTC)
    with fresh_database(server, keep=args.keep) as database_url:
        key, meters = asyncio.run(seed_llm(database_url))
        batches = args.llm_batches
        print(f"P1-LLM data: {batches} batches x 1000 LLM calls over HTTP, as many direct")
        calls = [
            [make_llm_call(rng, f"h-{b}-{i}", now) for i in range(1000)] for b in range(batches)
        ]
        bodies = [json.dumps({"events": batch}).encode() for batch in calls]
        direct_batches = [
            [validated(make_llm_call(rng, f"d-{b}-{i}", now), meters) for i in range(1000)]
            for b in range(batches)
        ]
        env = {
            "METERING_SECRET_KEY": SECRET,
            "METERING_DB_POOL_SIZE": str(max(Settings().db_pool_size, args.connections + 4)),
        }
        with running_service(database_url, args.port, args.workers, **env):
            http_rate, direct_rate = alternate(
                database_url, args.port, key, bodies, direct_batches, args.connections
            )
        quantities = len(LLM_QUANTITIES)
        print(
            f"P1-LLM    HTTP:   {http_rate:10,.0f} calls/s = {http_rate * quantities:,.0f} "
            f"quantities/s ({args.connections} connections, {args.workers} workers; "
            "goal >= 15,000 calls/s)"
        )
        print(f"P1-LLM    direct: {direct_rate:10,.0f} calls/s (asyncpg, same ingest SQL)")
        print(f"P1-LLM    ratio  HTTP/direct: {http_rate / direct_rate:.2f} (goal >= 0.75)")
        asyncio.run(report_stored(database_url))

        # Storage: the same calls as one values event each, then as 6 single events each.
        sample = [make_llm_call(rng, f"s-{i}", now) for i in range(args.storage_calls)]
        before = asyncio.run(events_table_bytes(database_url))
        rows = [validated(call, meters) for call in sample]
        asyncio.run(p1_direct(database_url, chunks(rows), args.connections))
        middle = asyncio.run(events_table_bytes(database_url))
        singles = [validated(e, meters) for call in sample for e in fan_out(call)]
        asyncio.run(p1_direct(database_url, chunks(singles), args.connections))
        after = asyncio.run(events_table_bytes(database_url))
        one, six = (middle - before) / len(sample), (after - middle) / len(sample)
        print(
            f"Events table per call ({len(sample):,} calls, heap + indexes): "
            f"{one:,.0f} bytes as one values event, {six:,.0f} bytes as {quantities} single "
            f"events (ratio {one / six:.2f})"
        )


def chunks(rows: list[EventRow], size: int = 1000) -> list[list[EventRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=200, help="P1 batches of 1000 events")
    parser.add_argument("--connections", type=int, default=4, help="P1 concurrent connections")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--p2-seconds", type=int, default=15)
    parser.add_argument("--p2-connections", type=int, default=64)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--llm-batches", type=int, default=100, help="P1-LLM batches of 1000")
    parser.add_argument("--storage-calls", type=int, default=20_000, help="calls for bytes/call")
    parser.add_argument(
        "--only", choices=("single", "llm"), help="run only the single-event or the LLM part"
    )
    args = parser.parse_args()

    server = bench_server_url()
    if args.only != "single":
        run_llm(args, server)
        if args.only == "llm":
            return
    rng = random.Random(42)
    now = datetime.now(UTC)
    with fresh_database(server, keep=args.keep) as database_url:
        key, meter_ids = asyncio.run(seed(database_url))
        print(f"P1 data: {args.batches} batches x 1000 events over HTTP, as many direct")
        http_batches = [
            [make_event(rng, f"h-{b}-{i}", now) for i in range(1000)] for b in range(args.batches)
        ]
        bodies = [json.dumps({"events": batch}).encode() for batch in http_batches]
        direct_batches = [
            [to_row(make_event(rng, f"d-{b}-{i}", now), meter_ids) for i in range(1000)]
            for b in range(args.batches)
        ]
        settings = Settings(secret_key=SECRET)
        env = {
            "METERING_SECRET_KEY": SECRET,
            "METERING_DB_POOL_SIZE": str(max(settings.db_pool_size, args.connections + 4)),
        }
        with running_service(database_url, args.port, args.workers, **env) as process:
            base = f"http://127.0.0.1:{args.port}"
            sampler = RssSampler(process.pid)
            sampler.start()
            http_rate, direct_rate = alternate(
                database_url, args.port, key, bodies, direct_batches, args.connections
            )
            sampler.stop_event.set()
            sampler.join()
            print(
                f"P1 batch  HTTP:   {http_rate:10,.0f} events/s ({args.connections} connections, "
                f"{args.workers} workers)"
            )
            print(f"P1 batch  direct: {direct_rate:10,.0f} events/s (asyncpg, same ingest SQL)")
            print(f"P1 ratio  HTTP/direct: {http_rate / direct_rate:.2f}")
            workers = {pid: mb for pid, mb in sampler.peak.items() if pid != process.pid}
            print(
                "Peak RSS under P1: "
                + ", ".join(f"{mb:.0f} MB" for mb in sorted(workers.values(), reverse=True))
                + f" (workers); master {sampler.peak.get(process.pid, 0):.0f} MB"
            )
            single = p2_single(base, key, args.p2_connections, args.p2_seconds)
            if single:
                print(
                    f"P2 single: {single['rps']:,.0f} req/s, p50 {single['p50_ms']:.1f} ms, "
                    f"p99 {single['p99_ms']:.1f} ms at {args.p2_connections} connections "
                    f"({single['requests']:,.0f} requests, {single['non_2xx']:.0f} non-2xx)"
                )
        asyncio.run(report_stored(database_url))


async def report_stored(database_url: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        events = await connection.fetchval("SELECT count(*) FROM events")
        quantities = await connection.fetchval(
            "SELECT sum(coalesce(cardinality(meter_ids), 1)) FROM events"
        )
        rolled = await connection.fetchval("SELECT sum(count)::bigint FROM rollups")
    finally:
        await connection.close()
    print(
        f"Stored: {events:,} events holding {quantities:,} quantities; rollups count "
        f"{rolled:,} (must equal the quantities)"
    )


if __name__ == "__main__":
    main()
