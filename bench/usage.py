"""Usage query benchmark (make bench-usage): a tenant-month of LLM traffic, queried over HTTP.

Data (`bench.datasets`), each shape seeded in its own fresh database (migrated to head) on the
server of BENCH_DATABASE_URL, else DATABASE_URL, else the embedded PostgreSQL: one tenant (UTC),
--events events (default 10M) over the 30 days of November 2026 (one whole calendar month),
2 sum meters (input_tokens, output_tokens), by COPY; rollups rebuilt day by day with the
service's rebuild SQL, folded into the coarser levels (`service.rollups.fold.fold_rollups`),
VACUUM ANALYZE.
  - realistic: 10,000 API keys, each owned by one user (2,000 users) in one project (50
    projects, 5 orgs), 20 models; key popularity Zipf 1.1 (every key used, a few dominant),
    models Zipf 1.1 too (real gateways have a few dominant models);
  - adversarial: 1,000 users x 50 keys x 5 models drawn independently and uniformly (the
    data of earlier rounds), so group-bys by user or key answer up to 250,000 rows.
--shape realistic|adversarial|both (default both).

Measured over HTTP against `python -m service serve` (one uvicorn worker), every meter (no
`meter` parameter), the whole month: GET /v1/usage grouped by model; user_id; api_key_id;
project_id; user_id+model; api_key_id+model; daily windows in Europe/Berlin and in
Asia/Kolkata grouped by user_id (from/to: that zone's month edges, as UTC instants); and the
busiest user (most events) filtered, daily windows. Each 2 warm-up runs, then --runs timed
(p50/p95/max, milliseconds, the whole response read), with the answer's rows (summed over
meters) and bytes. Goals: realistic, p95 <= 50 ms + 1 ms per 1,000 answer rows past 10,000;
adversarial, p95 <= 250 ms.

Checked: the answers by user_id, by api_key_id+model and by model (sum and count per meter and
group; by model also last) equal the same aggregates computed over the raw events, each raw
scan timed (by model --raw-runs times, for the raw-scan/HTTP ratio, goal >= 100x). Storage:
every rollup table's bytes (pg_total_relation_size) per byte of the events table.

    make bench-usage ARGS="--events 2000000 --shape realistic"
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m bench.usage --events 10000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx

from bench.common import bench_server_url, fresh_database, percentile, running_service
from bench.datasets import (
    LlmMonth,
    describe_month,
    rollup_tables,
    seed_llm_month,
    seed_realistic_month,
)
from service.db.url import asyncpg_dsn
from service.tenants.auth import generate_key

SECRET = "bench-secret"
PORT = 8741
GOAL_RATIO = 100.0
SHAPES = ("realistic", "adversarial")
# (meter, group values) -> (sum, count) or (sum, count, last): an answer, or a raw scan's.
Cells = dict[tuple[str, tuple[str | None, ...]], tuple[Any, ...]]
Params = list[tuple[str, str | int | float | bool | None]]


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    params: Params
    # Group keys whose sum and count are checked against a raw scan (None: not checked).
    check: tuple[str, ...] | None = None


@dataclass(slots=True)
class Result:
    query: Query
    samples: list[float]
    rows: int
    size: int
    goal_ms: float

    @property
    def p95(self) -> float:
        return percentile(self.samples, 95)

    @property
    def met(self) -> bool:
        return self.p95 <= self.goal_ms


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_month(month: LlmMonth, zone: str) -> tuple[str, str]:
    """The edges of the seeded calendar month in `zone`, as UTC instants (15-minute aligned)."""
    tz = ZoneInfo(zone)
    first = month.start.astimezone(UTC)
    following = (first.year + first.month // 12, first.month % 12 + 1)
    start = datetime(first.year, first.month, 1, tzinfo=tz).astimezone(UTC)
    end = datetime(*following, 1, tzinfo=tz).astimezone(UTC)
    for edge in (start, end):
        if edge.minute % 15 or edge.second or edge.microsecond:
            raise ValueError(f"{zone}: month edge {edge} is not on a 15-minute boundary")
    return iso(start), iso(end)


def queries(month: LlmMonth) -> list[Query]:
    utc = [("tenant_id", month.tenant_id), ("from", iso(month.start)), ("to", iso(month.end))]

    def daily_in(zone: str) -> Params:
        start, end = local_month(month, zone)
        return [
            ("tenant_id", month.tenant_id),
            ("from", start),
            ("to", end),
            ("window_size", "day"),
            ("timezone", zone),
            ("group_by", "user_id"),
        ]

    def by(*keys: str) -> Params:
        return [*utc, *(("group_by", key) for key in keys)]

    return [
        Query("group_by=model", by("model"), ("model",)),
        Query("group_by=user_id", by("user_id"), ("user_id",)),
        Query("group_by=api_key_id", by("api_key_id")),
        Query("group_by=project_id", by("project_id")),
        Query("group_by=user_id,model", by("user_id", "model")),
        Query("group_by=api_key_id,model", by("api_key_id", "model"), ("api_key_id", "model")),
        Query("day, Europe/Berlin, group_by=user_id", daily_in("Europe/Berlin")),
        Query("day, Asia/Kolkata, group_by=user_id", daily_in("Asia/Kolkata")),
        Query(
            f"day, filter=user_id:{month.busiest_user}",
            [*utc, ("window_size", "day"), ("filter", f"user_id:{month.busiest_user}")],
        ),
    ]


class QueryFailed(Exception):
    """The service answered a benchmark query with something else than 200."""


def goal_ms(shape: str, rows: int) -> float:
    if shape == "realistic":
        return 50.0 + max(0, rows - 10_000) / 1000
    return 250.0


async def timed(run: Callable[[], Awaitable[Any]], runs: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        await run()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def stats(samples: list[float]) -> str:
    return (
        f"p50 {percentile(samples, 50):8.1f}  p95 {percentile(samples, 95):8.1f}"
        f"  max {max(samples):8.1f}"
    )


def answer_cells(answer: dict[str, Any], keys: Sequence[str], with_last: bool) -> Cells:
    """An HTTP answer's (meter, group) -> (sum, count[, last])."""
    cells: Cells = {}
    for block in answer["meters"]:
        for row in block["rows"]:
            group = tuple(row["group"][key] for key in keys)
            value = (Decimal(row["sum"]), row["count"])
            cells[(block["meter"], group)] = (*value, row["last"]) if with_last else value
    return cells


def raw_sql(keys: Sequence[str], with_last: bool) -> str:
    columns = "".join(f", e.{key}" for key in keys)
    last = ", (array_agg(e.value ORDER BY e.ts DESC, e.id DESC))[1] AS last" if with_last else ""
    return f"""
SELECT m.event_name{columns}, sum(coalesce(e.value, 0)) AS sum, count(*) AS count{last}
FROM events e JOIN meters m ON m.id = e.meter_id
WHERE e.tenant_id = $1 AND e.ts >= $2 AND e.ts < $3
GROUP BY m.event_name{columns}
"""


async def raw_scan(
    url: str, month: LlmMonth, keys: Sequence[str], runs: int, warmup: int
) -> tuple[list[float], Cells]:
    """Times the aggregate over raw events; returns the samples and its cells."""
    with_last = list(keys) == ["model"]
    sql = raw_sql(keys, with_last)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute("SET work_mem = '256MB'")
        records: list[asyncpg.Record] = []

        async def run() -> None:
            nonlocal records
            records = await connection.fetch(sql, month.tenant_id, month.start, month.end)

        samples = await timed(run, runs, warmup=warmup)
    finally:
        await connection.close()
    cells: Cells = {}
    for r in records:
        value: tuple[Any, ...] = (r["sum"], r["count"])
        if with_last:
            value = (*value, None if r["last"] is None else format(r["last"], "f"))
        cells[(r["event_name"], tuple(r[key] for key in keys))] = value
    return samples, cells


async def create_read_key(url: str) -> str:
    key = generate_key(SECRET)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, scopes)"
            " VALUES ($1, 'bench', $2, $3, ARRAY['read'])",
            uuid.uuid4(),
            key.prefix,
            key.key_hash,
        )
    finally:
        await connection.close()
    return key.plaintext


async def over_http(
    key: str, month: LlmMonth, runs: int
) -> tuple[list[Result], dict[str, dict[str, Any]]]:
    """Times every query; returns the results and the decoded answers of the checked ones."""
    headers = {"Authorization": f"Bearer {key}"}
    results: list[Result] = []
    answers: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=300) as client:
        for query in queries(month):
            body = b""

            async def run(query: Query = query) -> None:
                nonlocal body
                response = await client.get("/v1/usage", params=query.params, headers=headers)
                if response.status_code != 200:
                    raise QueryFailed(f"{response.status_code} {response.text[:200]}")
                body = response.content

            try:
                samples = await timed(run, runs)
            except QueryFailed as failure:
                # Reported, not fatal: a query cut short by the statement timeout is a finding.
                print(f"  {query.name:<40} FAILED: {failure}", flush=True)
                results.append(Result(query, [float("inf")], 0, 0, goal_ms(month.shape, 0)))
                continue
            answer = json.loads(body)
            rows = sum(len(block["rows"]) for block in answer["meters"])
            result = Result(query, samples, rows, len(body), goal_ms(month.shape, rows))
            results.append(result)
            if query.check is not None:
                answers[query.name] = answer
            print(
                f"  {query.name:<40} rows {rows:>8,}  {len(body) / 1e6:7.2f} MB  "
                f"{stats(samples)}  goal {result.goal_ms:5.0f}: "
                f"{'met' if result.met else 'MISSED'}",
                flush=True,
            )
    return results, answers


async def table_rows(url: str) -> dict[str, int]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        tables = ["events", *await rollup_tables(connection)]
        return {
            table: await connection.fetchval(f'SELECT count(*) FROM "{table}"') for table in tables
        }
    finally:
        await connection.close()


async def storage(url: str) -> tuple[int, dict[str, int]]:
    """pg_total_relation_size of events and of every rollup table."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        size = "SELECT pg_total_relation_size($1::regclass)"
        events = await connection.fetchval(size, "events")
        rollups = {t: await connection.fetchval(size, t) for t in await rollup_tables(connection)}
        return events, rollups
    finally:
        await connection.close()


@dataclass(slots=True)
class ShapeReport:
    month: LlmMonth
    results: list[Result]
    ratio: float
    events_bytes: int
    rollup_bytes: dict[str, int]


def seed(shape: str, url: str, events: int) -> LlmMonth:
    seeder = seed_realistic_month if shape == "realistic" else seed_llm_month
    print(f"\n=== {shape}: seeding {events:,} events (one tenant, 30 days) ...", flush=True)
    started = time.perf_counter()
    month = asyncio.run(seeder(asyncpg_dsn(url), events))
    print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)
    return month


def run_shape(shape: str, server: str, args: argparse.Namespace) -> ShapeReport:
    if args.database:
        print(f"\n=== {shape}: {args.database} (seeded before)", flush=True)
        month = asyncio.run(describe_month(asyncpg_dsn(args.database), shape))
        return measure(shape, args.database, month, args)
    with fresh_database(server, keep=args.keep) as url:
        return measure(shape, url, seed(shape, url, args.events), args)


def measure(shape: str, url: str, month: LlmMonth, args: argparse.Namespace) -> ShapeReport:
    counts = asyncio.run(table_rows(url))
    print("  rows: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()), flush=True)
    events_bytes, rollup_bytes = asyncio.run(storage(url))
    total = sum(rollup_bytes.values())
    print(
        f"  storage: events {events_bytes / 2**20:,.1f} MiB; rollup tables, and bytes per "
        "event byte:",
        flush=True,
    )
    for table, size in rollup_bytes.items():
        print(f"    {table:<32} {size / 2**20:9,.1f} MiB  {size / events_bytes:6.3f}")
    print(f"    {'all rollup tables':<32} {total / 2**20:9,.1f} MiB  {total / events_bytes:6.3f}")

    key = asyncio.run(create_read_key(url))
    print(f"\n  Over HTTP, one uvicorn worker (ms; {args.runs} runs after 2 warm-up):", flush=True)
    with running_service(url, PORT, 1, METERING_SECRET_KEY=SECRET):
        results, answers = asyncio.run(over_http(key, month, args.runs))

    print("\n  Raw events, the same aggregates (ms):", flush=True)
    ratio = float("nan")
    for result in results:
        keys = result.query.check
        if keys is None or result.query.name not in answers:
            continue
        headline = keys == ("model",)
        # At least one run each: the answers are checked against it.
        runs, warmup = (max(args.raw_runs, 1), 1) if headline else (1, 0)
        samples, raw = asyncio.run(raw_scan(url, month, keys, runs, warmup))
        served = answer_cells(answers[result.query.name], keys, with_last=headline)
        equal = served == raw
        print(
            f"  GROUP BY meter, {', '.join(keys):<28} {stats(samples)}  (n={len(samples)})"
            f"  answers equal: {'yes' if equal else 'NO'}",
            flush=True,
        )
        if not equal:
            differing = sorted(set(served.items()) ^ set(raw.items()), key=str)[:5]
            raise AssertionError(
                f"{shape}, {result.query.name}: the service and the raw scan disagree "
                f"({len(served)} vs {len(raw)} cells; e.g. {differing})"
            )
        if headline:
            ratio = statistics.median(samples) / statistics.median(result.samples)
    print(
        f"  month by model: raw scan {ratio:,.0f}x slower than HTTP p50 "
        f"(goal >= {GOAL_RATIO:.0f}x: {'met' if ratio >= GOAL_RATIO else 'MISSED'})",
        flush=True,
    )
    return ShapeReport(month, results, ratio, events_bytes, rollup_bytes)


def summary(report: ShapeReport) -> None:
    month = report.month
    timings = ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in month.timings.items())
    folded = f"{month.folded:,} rows"
    total = sum(report.rollup_bytes.values())
    print(
        f"\n{month.shape}: {month.events:,} events; seeding {timings}; fold {folded}; "
        f"rollups {total / report.events_bytes:.3f} bytes per event byte; "
        f"raw scan / HTTP by model {report.ratio:,.0f}x",
        flush=True,
    )
    header = f"  {'query':<40} {'rows':>8} {'MB':>7} {'p50':>8} {'p95':>8} {'goal':>6}  met"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in report.results:
        print(
            f"  {r.query.name:<40} {r.rows:>8,} {r.size / 1e6:>7.2f} "
            f"{percentile(r.samples, 50):>8.1f} {r.p95:>8.1f} {r.goal_ms:>6.0f}  "
            f"{'met' if r.met else 'MISSED'}"
        )
    missed = sum(not r.met for r in report.results)
    print(f"  {len(report.results) - missed} of {len(report.results)} goals met", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--shape", choices=(*SHAPES, "both"), default="both")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--raw-runs", type=int, default=5, help="raw scans by model, timed")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument(
        "--database",
        help="a database of one --shape seeded before (--keep; bench.costs seeds the realistic "
        "one too): no seeding",
    )
    args = parser.parse_args()
    if args.database and args.shape == "both":
        parser.error("--database needs --shape realistic or --shape adversarial")

    server = bench_server_url()
    shapes = SHAPES if args.shape == "both" else (args.shape,)
    reports = [run_shape(shape, server, args) for shape in shapes]
    print("\n=== Summary (ms; p95 goal: realistic 50 + 1 per 1,000 rows past 10,000, "
          "adversarial 250)")  # fmt: skip
    for report in reports:
        summary(report)


if __name__ == "__main__":
    main()
