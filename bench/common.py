"""What every benchmark needs: a fresh migrated database on a given server, and a service
process to measure."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from service.db.migrations import upgrade_to_head
from service.db.url import asyncpg_dsn

ROOT = Path(__file__).resolve().parent.parent


def bench_server_url() -> str:
    """BENCH_DATABASE_URL, else DATABASE_URL, else the embedded PostgreSQL under .data/bench."""
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    from service.db.embedded import start_embedded_postgres

    return start_embedded_postgres(ROOT / ".data" / "bench")


async def _admin(server: str, sql: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextmanager
def fresh_database(server: str, keep: bool = False) -> Iterator[str]:
    """A new database on the server, migrated to head; dropped afterwards unless keep."""
    name = f"metering_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_to_head(url)
        yield url
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def running_service(
    database_url: str, port: int, workers: int, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m service serve` in a subprocess, ready when /healthz answers."""
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "METERING_LOG_LEVEL": "WARNING",
        "METERING_RETENTION_INTERVAL_SECONDS": "0",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (uvicorn's master and its workers)."""
    pids = [pid]
    for child in Path("/proc").iterdir():
        if not child.name.isdigit():
            continue
        try:
            stat = (child / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            pids.extend(process_tree(int(child.name)))
    return pids


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
