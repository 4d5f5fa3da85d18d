"""A real HTTP receiver of webhooks on a local port, in a thread: it answers with the status
codes it is told (one per request, then the default), records every request and the most
requests it ever had in flight for one webhook-id."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.live_server import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int
    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    delay_seconds: float = 0.0
    received: list[Received] = field(default_factory=list)
    max_in_flight_per_id: int = 0
    _in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        webhook_id = headers.get("webhook-id", "")
        with self._lock:
            self._in_flight[webhook_id] += 1
            self.max_in_flight_per_id = max(self.max_in_flight_per_id, self._in_flight[webhook_id])
            status = self.statuses.pop(0) if self.statuses else self.default_status
        try:
            if self.delay_seconds:
                time.sleep(self.delay_seconds)
        finally:
            with self._lock:
                self._in_flight[webhook_id] -= 1
                self.received.append(Received(headers, body, status, time.monotonic()))
        return status

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until `count` requests ended (the caller runs off the event loop or awaits
        `asyncio.to_thread`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"received {len(self.received)} requests, expected {count}")


@contextmanager
def running_receiver(port: int | None = None) -> Iterator[Receiver]:
    receiver = Receiver(port or free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status = receiver.answer(headers, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
