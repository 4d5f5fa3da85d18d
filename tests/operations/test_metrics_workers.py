"""/metrics is right with several uvicorn worker processes: `serve` empties the multiprocess
directory, every worker writes there, and any worker's scrape reports the sum of all of them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.operations.metrics import MULTIPROC_ENV
from service.paths import PROJECT_ROOT
from tests.conftest import TEST_SECRET

WORKERS = 2
REQUESTS = 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`python -m service serve --workers 2` on a free port; yields (base url, metrics dir)."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left over from an earlier run")
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "METERING_SECRET_KEY": TEST_SECRET,
        "METERING_LOG_LEVEL": "WARNING",
        "METERING_RETENTION_INTERVAL_SECONDS": "0",
        MULTIPROC_ENV: str(metrics_dir),
    }
    command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1"]
    log = tmp_path / "serve.log"  # a file, not a pipe: a full pipe would stall the server
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, "--port", str(port), "--workers", str(WORKERS)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"serve exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("serve did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield base, metrics_dir
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _requests_counted(exposition: str, route: str, status: str) -> float:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "metering_http_requests_total" and sample.labels == {
                "method": "GET",
                "route": route,
                "status": status,
            }:
                return sample.value
    return 0.0


def test_every_scrape_sums_all_workers(served: tuple[str, Path]) -> None:
    base, metrics_dir = served
    assert not (metrics_dir / "counter_999999.db").exists(), "stale samples were not cleared"
    # A new connection per request, so the kernel spreads them over the workers.
    for _ in range(REQUESTS):
        response = httpx.get(f"{base}/v1/tenants", headers={"Connection": "close"}, timeout=10)
        assert response.status_code == 401
    writers = {path.name.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}
    assert len(writers) >= WORKERS, f"expected a sample file per worker, got {sorted(writers)}"
    for _ in range(2 * WORKERS):  # whichever worker answers, the total is the same
        scrape = httpx.get(f"{base}/metrics", headers={"Connection": "close"}, timeout=10)
        assert scrape.status_code == 200
        assert _requests_counted(scrape.text, "/v1/tenants", "401") == REQUESTS
