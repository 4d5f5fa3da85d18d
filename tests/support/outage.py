"""Database outages for tests: clients keep calling the API while the database goes away, and
afterwards the service must have answered every call with a success or a 503 (never a 500 or
a hang), recovered by itself, and kept every write it acknowledged.

A `Workload` is what the clients do; a disruption is what happens to the database meanwhile.
Both are small, so that a new workload (ingestion: every acknowledged event stored exactly
once) plugs into `run_outage` with the same disruptions."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import httpx

from service.db.url import asyncpg_dsn

# Requests must really overlap: use tests.support.in_loop.in_loop_client, not AsyncTestClient.
Client = httpx.AsyncClient
# Generous bounds: they tell "answered" from "hung", they do not measure speed.
CALL_DEADLINE_SECONDS = 30.0
RECOVERY_SECONDS = 30.0
UNAVAILABLE_CODES = frozenset({"database_unavailable", "overloaded"})


@dataclass
class Tally:
    """Every answer the clients got, and whatever broke the rules."""

    statuses: Counter[int] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def record(self, what: str, response: httpx.Response, allowed: frozenset[int]) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code == 503:
            problem = _json(response)
            if problem.get("code") not in UNAVAILABLE_CODES:
                self.violations.append(f"{what}: 503 with code {problem.get('code')!r}")
            if "retry-after" not in response.headers:
                self.violations.append(f"{what}: 503 without Retry-After")
        elif response.status_code not in allowed:
            self.violations.append(f"{what}: {response.status_code} {response.text[:300]}")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def call(
    tally: Tally,
    what: str,
    send: Callable[[], Awaitable[httpx.Response]],
    allowed: frozenset[int],
) -> httpx.Response:
    """One request, which must come back (success or 503) well within the deadline."""
    try:
        response = await asyncio.wait_for(send(), CALL_DEADLINE_SECONDS)
    except TimeoutError:
        tally.violations.append(f"{what}: no answer within {CALL_DEADLINE_SECONDS} s")
        raise
    tally.record(what, response, allowed)
    return response


async def retry_until_answered(
    tally: Tally,
    what: str,
    send: Callable[[], Awaitable[httpx.Response]],
    allowed: frozenset[int],
    retry_delay: float = 0.05,
) -> httpx.Response:
    """What a well-behaved client does: retry 503s (sooner than Retry-After, to keep tests
    short) until another answer comes, within the recovery bound."""
    deadline = time.monotonic() + RECOVERY_SECONDS + CALL_DEADLINE_SECONDS
    while True:
        response = await call(tally, what, send, allowed)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(retry_delay)


class Workload(Protocol):
    """What one client does in a loop while the database is disrupted."""

    name: str

    async def step(self, client: Client, tally: Tally, client_no: int, step_no: int) -> None:
        """One unit of work (retrying 503s); remember what the service acknowledged."""

    async def verify(self, client: Client, tally: Tally) -> None:
        """After recovery: everything acknowledged is there (exactly once where it matters)."""


async def run_outage(
    client: Client,
    workload: Workload,
    disruption: Callable[[], Awaitable[None]],
    clients: int = 6,
) -> Tally:
    """Run `clients` concurrent clients of `workload` until `disruption` finishes, then let them
    finish their current step; return the tally (the caller asserts on it)."""
    tally = Tally()
    done = asyncio.Event()

    async def one_client(client_no: int) -> None:
        step_no = 0
        while not done.is_set():
            await workload.step(client, tally, client_no, step_no)
            step_no += 1

    runners = [asyncio.create_task(one_client(n)) for n in range(clients)]
    try:
        await asyncio.sleep(0.2)  # traffic before the outage
        await disruption()
    finally:
        done.set()
        results = await asyncio.gather(*runners, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            tally.violations.append(f"client failed: {result!r}")
    return tally


async def wait_until_ready(client: Client) -> float:
    """Seconds until /readyz answers 200 again; fails after RECOVERY_SECONDS."""
    started = time.monotonic()
    last: httpx.Response | None = None
    while time.monotonic() - started < RECOVERY_SECONDS:
        last = await asyncio.wait_for(client.get("/readyz"), CALL_DEADLINE_SECONDS)
        if last.status_code == 200:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"/readyz not 200 within {RECOVERY_SECONDS} s: {last.text if last else None}"
    )


def terminate_backends(
    database_url: str, seconds: float = 2.0, every: float = 0.15
) -> Callable[[], Awaitable[None]]:
    """Disruption: kill every other connection to the database, repeatedly, for `seconds`
    (what clients see when PostgreSQL restarts or fails over: established connections die)."""

    async def disrupt() -> None:
        killer = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await killer.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                await asyncio.sleep(every)
        finally:
            await killer.close()

    return disrupt


class StallingProxy:
    """A TCP proxy in front of PostgreSQL that can stop forwarding: what the service sees when
    the database freezes (SIGSTOP, a hung storage volume, a network partition without resets).
    Connections are still accepted while stalled, and bytes are held, not dropped, so after
    `resume()` everything flows on as if the server had only been slow.

    It runs on the test's event loop, so use it with tests.support.in_loop.in_loop_client."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, database_url: str) -> str:
        """database_url, pointing at this proxy instead."""
        from sqlalchemy.engine import make_url

        proxied = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return proxied.render_as_string(hide_password=False)

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        self.resume()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sink.close()
