"""The service as a user runs it: `python -m service serve` in a process of its own, on a free
port, against a test database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from service.paths import PROJECT_ROOT

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_environment(database_url: str, secret_key: str) -> dict[str, str]:
    """This process's environment without any METERING_* the developer may have set, plus the
    database and the secret that the server and the command line must share."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("METERING_")}
    env.update(
        DATABASE_URL=database_url,
        METERING_SECRET_KEY=secret_key,
        METERING_JSON_LOGS="false",
        METERING_LOG_LEVEL="WARNING",
        METERING_RETENTION_INTERVAL_SECONDS="0",
        # Servers that outlive a test (the clients' session server) would otherwise post, or
        # refuse, the webhook deliveries of later tests; tests that send turn it on.
        METERING_WEBHOOK_SEND_INTERVAL_SECONDS="0",
        PYTHONPATH=str(PROJECT_ROOT),
    )
    # curl and urllib honour *_proxy variables: the local server must never go through one.
    bypass = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    env.update(NO_PROXY=bypass, no_proxy=bypass)
    return env


@contextmanager
def live_server(env: dict[str, str], start_timeout: float = 60.0) -> Iterator[str]:
    """Serve with one worker on a free port; yield its base URL once /readyz answers 200."""
    port = free_port()
    env = {**env, "METERING_HOST": "127.0.0.1", "METERING_PORT": str(port)}
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--workers", "1"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole below
        )
        try:
            _wait_until_ready(base, server, log, start_timeout)
            yield base
        finally:
            _stop(server)


def _wait_until_ready(
    base: str, server: subprocess.Popen[bytes], log: IO[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(
                f"the server exited with {server.returncode}:\n{log.read().decode()}"
            )
        try:
            with _NO_PROXY.open(f"{base}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    log.seek(0)
    raise RuntimeError(f"the server did not get ready in {timeout:.0f} s:\n{log.read().decode()}")


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=5)
