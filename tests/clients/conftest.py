"""The Python client against the service as it runs for real: `python -m service serve` in a
process of its own, on a port that stays the same when the test stops and restarts it, plus a
proxy that can lose an answer after the service committed the batch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

import httpx
import psycopg2
import pytest
from sqlalchemy.engine import make_url

from service.paths import PROJECT_ROOT
from tests.conftest import TEST_SECRET, Keys
from tests.support.live_server import free_port, service_environment

START_TIMEOUT_SECONDS = 60.0


class ServiceProcess:
    """`python -m service serve` on a fixed port, which the test may kill and start again."""

    def __init__(self, database_url: str, workers: int = 1) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = {
            **service_environment(database_url, TEST_SECRET),
            "METERING_HOST": "127.0.0.1",
            "METERING_PORT": str(self.port),
            # Every test creates its tenant, meters and keys afresh on a truncated database:
            # the server must not answer from what it cached for the previous test.
            "METERING_API_KEY_CACHE_SECONDS": "0",
            "METERING_REFERENCE_CACHE_SECONDS": "0.2",
            "METERING_ROLLUP_FOLD_INTERVAL_SECONDS": "0",
            # Small enough that a batch of 1000 events with 1 kB of metadata each is over it.
            "METERING_MAX_BODY_BYTES": "500000",
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the test session)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--workers", str(self.workers)],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not get ready:\n{self.log()}")

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-3000:]

    def stop(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """SIGKILL by default: requests in flight get no answer, as in a crash."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, sig)
        process.wait(timeout=15)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


@pytest.fixture(scope="session")
def service(database_url: str) -> Iterator[ServiceProcess]:
    """One server for the client's tests (a test that stops it starts it again)."""
    process = ServiceProcess(database_url)
    process.start()
    yield process
    process.stop(signal.SIGTERM)


@dataclass
class Setup:
    base_url: str
    admin_key: str
    ingest_key: str
    read_key: str
    billing_key: str
    tenant_id: str = "acme"


def _bearer(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture
async def setup(service: ServiceProcess, keys: Keys) -> Setup:
    """Tenant `acme`, the sum meter `api_calls` (dimension `region`), the LLM preset, and keys."""
    if not service.running:
        service.start()
    async with httpx.AsyncClient(base_url=service.base_url, headers=keys.admin) as admin:
        answers = [
            await admin.post(
                "/v1/tenants",
                json={"id": "acme", "name": "Acme", "currency": "USD", "timezone": "UTC"},
            ),
            await admin.post(
                "/v1/meters",
                json={
                    "event_name": "api_calls",
                    "name": "API calls",
                    "aggregation": "sum",
                    "dimensions": ["region"],
                    "currency": "USD",
                },
            ),
            await admin.post("/v1/meters/presets/llm", json={}),
        ]
        for answer in answers:
            assert answer.status_code in (200, 201), answer.text
    await asyncio.sleep(0.3)  # past the server's reference cache
    return Setup(
        base_url=service.base_url,
        admin_key=_bearer(keys.admin),
        ingest_key=_bearer(await keys.make("ingest", name="tracker")),
        read_key=_bearer(await keys.make("read", name="reader")),
        billing_key=_bearer(await keys.make("billing", "read", name="finance")),
    )


def stored_events(database_url: str, tenant_id: str = "acme") -> tuple[int, int]:
    """(events stored, distinct idempotency keys among them) for the tenant."""
    url = make_url(database_url).set(drivername="postgresql")
    connection = psycopg2.connect(url.render_as_string(hide_password=False))
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), count(DISTINCT idempotency_key) FROM events WHERE tenant_id = %s",
                (tenant_id,),
            )
            total, distinct = cursor.fetchone()  # type: ignore[misc]
            return int(total), int(distinct)
    finally:
        connection.close()


def stored_keys(database_url: str, tenant_id: str = "acme") -> set[str]:
    url = make_url(database_url).set(drivername="postgresql")
    connection = psycopg2.connect(url.render_as_string(hide_password=False))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT idempotency_key FROM events WHERE tenant_id = %s", (tenant_id,))
            return {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()


@dataclass(frozen=True)
class ProxyAction:
    """Answer `status` (with `headers`) instead of the service, or lose the answer: close the
    connection without one."""

    status: int | None = None
    headers: dict[str, str] | None = None
    lose_answer: bool = False


class Proxy:
    """An HTTP proxy in front of the service; `before` decides per request (numbered from 1)
    before forwarding, `after` once the service answered (the batch is committed by then)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests = 0
        self.before: Callable[[int], ProxyAction | None] = lambda number: None
        self.after: Callable[[int, httpx.Response], ProxyAction | None] = lambda n, r: None
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=upstream, timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with proxy._lock:
                    proxy.requests += 1
                    number = proxy.requests
                action = proxy.before(number)
                if action is None:
                    try:
                        answer = proxy._http.post(
                            self.path,
                            content=body,
                            headers={
                                "authorization": self.headers.get("authorization", ""),
                                "content-type": self.headers.get("content-type", ""),
                            },
                        )
                    except httpx.HTTPError:
                        self._answer(502, b"", {})
                        return
                    action = proxy.after(number, answer)
                    if action is None:
                        self._answer(answer.status_code, answer.content, dict(answer.headers))
                        return
                if action.lose_answer:
                    self.close_connection = True
                    return
                self._answer(action.status or 502, b"{}", action.headers or {})

            def _answer(self, status: int, content: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name in ("content-type", "retry-after"):
                    if name in headers:
                        self.send_header(name, headers[name])
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()


@pytest.fixture
def proxy(service: ServiceProcess) -> Iterator[Proxy]:
    proxy = Proxy(service.base_url)
    yield proxy
    proxy.close()
