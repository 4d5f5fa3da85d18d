"""When PostgreSQL goes away, every request gets a success or a 503 with Retry-After (never a
500 or a hang), the service recovers by itself, and nothing it acknowledged is lost.

Disruptions: killing every backend of the database during concurrent traffic (what a restart
or failover does to established connections), a real stop and start of a private embedded
PostgreSQL, a database that does not answer at all, a table locked by someone else for longer
than the lock and statement timeouts, and a database that freezes (a proxy stops forwarding).
Workloads implement tests/support/outage.Workload; an ingestion workload (exactly-once under
retries) can join WORKLOADS and run against the same disruptions."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError

from service.app import create_app
from service.common.errors import EXCEPTION_HANDLERS
from service.db.url import asyncpg_dsn
from service.settings import Settings
from tests.conftest import make_settings
from tests.support.in_loop import in_loop_client
from tests.support.outage import (
    Client,
    StallingProxy,
    Tally,
    Workload,
    call,
    retry_until_answered,
    run_outage,
    terminate_backends,
    wait_until_ready,
)
from tests.support.private_database import (
    create_key,
    create_migrated_database,
    drop_private_database,
)

# A small pool and no key cache: every request needs a connection, so every request is exposed.
OUTAGE_SETTINGS: dict[str, Any] = {"db_pool_size": 4, "db_pool_timeout_seconds": 2.0}


class TenantWorkload:
    """Create a tenant, read it back. Creates are retried after 503; a 409 on a retry means an
    earlier attempt committed before its connection died, which counts as acknowledged."""

    name = "tenants"

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.acknowledged: set[str] = set()

    async def step(self, client: Client, tally: Tally, client_no: int, step_no: int) -> None:
        tenant_id = f"c{client_no}-{step_no}"
        created = await retry_until_answered(
            tally,
            f"POST /v1/tenants ({tenant_id})",
            lambda: client.post(
                "/v1/tenants", json={"id": tenant_id, "name": "Outage"}, headers=self.headers
            ),
            allowed=frozenset({201, 409}),
        )
        if created.status_code in (201, 409):
            self.acknowledged.add(tenant_id)
        await retry_until_answered(
            tally,
            f"GET /v1/tenants/{tenant_id}",
            lambda: client.get(f"/v1/tenants/{tenant_id}", headers=self.headers),
            allowed=frozenset({200}),
        )

    async def verify(self, client: Client, tally: Tally) -> None:
        response = await call(
            tally,
            "GET /v1/tenants",
            lambda: client.get("/v1/tenants", params={"limit": 1000}, headers=self.headers),
            allowed=frozenset({200}),
        )
        stored = {t["id"] for t in response.json()["items"]}
        assert self.acknowledged, "the workload never got a write through"
        assert stored == self.acknowledged


class ApiKeyWorkload:
    """Create an API key, list keys. Key creation has no idempotency key, so a retry after an
    ambiguous 503 may add a second key: every acknowledged key must exist, extras may."""

    name = "api-keys"

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.acknowledged: set[str] = set()

    async def step(self, client: Client, tally: Tally, client_no: int, step_no: int) -> None:
        created = await retry_until_answered(
            tally,
            "POST /v1/api-keys",
            lambda: client.post(
                "/v1/api-keys",
                json={"name": f"k{client_no}-{step_no}", "scopes": ["read"]},
                headers=self.headers,
            ),
            allowed=frozenset({201}),
        )
        if created.status_code == 201:
            self.acknowledged.add(created.json()["id"])
        await retry_until_answered(
            tally,
            "GET /v1/api-keys",
            lambda: client.get("/v1/api-keys", params={"limit": 5}, headers=self.headers),
            allowed=frozenset({200}),
        )

    async def verify(self, client: Client, tally: Tally) -> None:
        response = await call(
            tally,
            "GET /v1/api-keys",
            lambda: client.get("/v1/api-keys", params={"limit": 1000}, headers=self.headers),
            allowed=frozenset({200}),
        )
        stored = {k["id"] for k in response.json()["items"]}
        assert self.acknowledged, "the workload never got a write through"
        assert self.acknowledged <= stored


class IngestWorkload:
    """Post usage events, single and in batches of three, retrying every 503 with the same
    idempotency keys (what a gateway does). Afterwards every acknowledged event must be stored
    exactly once and counted once in the rollups: no loss, no double count."""

    name = "ingest"
    TENANT = "outage"
    METER = "outage_calls"

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.acknowledged: dict[str, int] = {}  # idempotency key -> value
        self.started = datetime.now(UTC)
        self._ready = asyncio.Lock()
        self._prepared = False

    async def _prepare(self, client: Client, tally: Tally) -> None:
        async with self._ready:
            if self._prepared:
                return
            await retry_until_answered(
                tally,
                "POST /v1/tenants",
                lambda: client.post(
                    "/v1/tenants", json={"id": self.TENANT, "name": "Outage"}, headers=self.headers
                ),
                allowed=frozenset({201, 409}),
            )
            meter = {
                "event_name": self.METER,
                "name": "Calls",
                "aggregation": "sum",
                "currency": "USD",
            }
            await retry_until_answered(
                tally,
                "POST /v1/meters",
                lambda: client.post("/v1/meters", json=meter, headers=self.headers),
                allowed=frozenset({201, 409}),
            )
            self._prepared = True

    def _event(self, key: str, value: int) -> dict[str, Any]:
        return {
            "tenant_id": self.TENANT,
            "event_name": self.METER,
            "idempotency_key": key,
            "timestamp": (datetime.now(UTC) - timedelta(seconds=30)).isoformat(),
            "value": str(value),
        }

    async def step(self, client: Client, tally: Tally, client_no: int, step_no: int) -> None:
        await self._prepare(client, tally)
        value = client_no + 1
        if step_no % 2 == 0:
            key = f"c{client_no}-s{step_no}"
            body = self._event(key, value)  # built once: a retry re-sends the same payload
            answer = await retry_until_answered(
                tally,
                f"POST /v1/events ({key})",
                lambda: client.post("/v1/events", json=body, headers=self.headers),
                allowed=frozenset({202}),
            )
            if answer.status_code == 202:
                self.acknowledged[key] = value
            return
        keys = [f"c{client_no}-s{step_no}-{i}" for i in range(3)]
        batch = {"events": [self._event(k, value) for k in keys]}
        answer = await retry_until_answered(
            tally,
            f"POST /v1/events/batch ({keys[0]}…)",
            lambda: client.post("/v1/events/batch", json=batch, headers=self.headers),
            allowed=frozenset({200}),
        )
        if answer.status_code == 200:
            for result in answer.json()["results"]:
                if result["status"] not in ("accepted", "duplicate"):
                    tally.violations.append(f"batch event refused: {result}")
                    continue
                self.acknowledged[keys[result["index"]]] = value

    async def verify(self, client: Client, tally: Tally) -> None:
        assert self.acknowledged, "the workload never got an event through"
        stored: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"tenant_id": self.TENANT, "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = await call(
                tally,
                "GET /v1/events",
                lambda params=params: client.get("/v1/events", params=params, headers=self.headers),  # type: ignore[misc]
                allowed=frozenset({200}),
            )
            body = page.json()
            stored += [item["idempotency_key"] for item in body["items"]]
            cursor = body["next_cursor"]
            if not cursor:
                break
        # Exactly once: every acknowledged event is stored, none twice. (An attempt whose
        # answer was lost is retried until answered, so nothing stored goes unacknowledged.)
        assert sorted(stored) == sorted(self.acknowledged)
        start = self.started.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        usage = await call(
            tally,
            "GET /v1/usage",
            lambda: client.get(
                "/v1/usage",
                params={
                    "tenant_id": self.TENANT,
                    "meter": self.METER,
                    "from": start.isoformat(),
                    "to": (start + timedelta(hours=3)).isoformat(),
                },
                headers=self.headers,
            ),
            allowed=frozenset({200}),
        )
        rows = usage.json()["rows"]
        assert len(rows) == 1, rows
        assert Decimal(rows[0]["sum"]) == sum(self.acknowledged.values())
        assert rows[0]["count"] == len(self.acknowledged)


WORKLOADS: dict[str, Callable[[dict[str, str]], Workload]] = {
    "tenants": TenantWorkload,
    "api-keys": ApiKeyWorkload,
    "ingest": IngestWorkload,
}


async def _truncate(database_url: str) -> None:
    from service.db.url import asyncpg_dsn

    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute(
            "TRUNCATE tenants, api_keys, meters, events, rollup_rows, model_rollup_rows "
            "RESTART IDENTITY CASCADE"
        )
    finally:
        await connection.close()


async def _run_and_check(
    app: Litestar,
    settings: Settings,
    make_workload: Callable[[dict[str, str]], Workload],
    disruption: Callable[[], Awaitable[None]],
) -> Tally:
    admin = await create_key(settings, "admin")
    workload = make_workload(admin)
    async with in_loop_client(app) as client:
        tally = await run_outage(client, workload, disruption)
        await wait_until_ready(client)
        await workload.verify(client, tally)
    assert not tally.violations, tally.violations
    return tally


# --- killing the pool's connections ---------------------------------------------------------


@pytest.fixture(scope="module")
def private_database(database_server: str) -> Iterator[str]:
    url = create_migrated_database(database_server)
    yield url
    drop_private_database(database_server, url)


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
async def test_killed_connections_give_503_never_500_and_the_service_recovers(
    private_database: str, workload: str
) -> None:
    await _truncate(private_database)
    settings = make_settings(private_database, **OUTAGE_SETTINGS)
    app = create_app(settings)
    tally = await _run_and_check(
        app, settings, WORKLOADS[workload], terminate_backends(private_database)
    )
    # The disruption must have been felt, or the test proves nothing.
    assert tally.statuses[503] > 0, tally.statuses


# --- a real stop and start of PostgreSQL ----------------------------------------------------


@contextlib.asynccontextmanager
async def embedded_server() -> AsyncIterator[tuple[Any, str]]:
    """A private pgserver PostgreSQL in a temporary directory (its own postmaster, which this
    test may stop and start), with the migrations applied."""
    import pgserver

    pgdata = Path(tempfile.mkdtemp(prefix="metering-outage-"))
    try:
        server: Any = await asyncio.to_thread(pgserver.get_server, pgdata, cleanup_mode="delete")
    except Exception as exc:  # pragma: no cover - depends on the machine
        shutil.rmtree(pgdata, ignore_errors=True)
        pytest.skip(f"embedded PostgreSQL (pgserver) cannot start here: {exc!r}")
    try:
        url = create_migrated_database(str(server.get_uri()))
        yield server, url
    finally:
        await asyncio.to_thread(server.cleanup)
        shutil.rmtree(pgdata, ignore_errors=True)


def restart_server(server: Any, down_seconds: float = 1.5) -> Callable[[], Awaitable[None]]:
    """Disruption: stop PostgreSQL (fast shutdown: sessions are terminated), keep it down for a
    while (connections are refused), then start it again with the same options."""
    import pgserver

    def pg_ctl(*args: str) -> None:
        pgserver.pg_ctl(["-w", *args], pgdata=server.pgdata, user=server.system_user)

    async def disrupt() -> None:
        await asyncio.to_thread(pg_ctl, "-m", "fast", "stop")
        await asyncio.sleep(down_seconds)
        # `restart` reuses the options the server was started with (postmaster.opts).
        await asyncio.to_thread(pg_ctl, "-l", str(server.log), "restart")

    return disrupt


@pytest.mark.parametrize("workload", ["tenants", "ingest"])
async def test_postgres_restart_gives_503_never_500_and_the_service_recovers(
    workload: str,
) -> None:
    async with embedded_server() as (server, url):
        settings = make_settings(url, **OUTAGE_SETTINGS)
        app = create_app(settings)
        tally = await _run_and_check(app, settings, WORKLOADS[workload], restart_server(server))
        assert tally.statuses[503] > 0, tally.statuses


# --- a database that is not there at all ----------------------------------------------------


async def test_unreachable_database_is_503_quickly_and_readyz_says_so() -> None:
    # Nothing listens on port 1: every connection attempt is refused.
    settings = make_settings("postgresql://nobody@127.0.0.1:1/nothing", **OUTAGE_SETTINGS)
    async with in_loop_client(create_app(settings)) as client:
        response = await asyncio.wait_for(
            client.get("/v1/tenants", headers={"Authorization": "Bearer mk_x_y"}), 30
        )
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "database_unavailable"
        assert response.headers["retry-after"] == "1"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert (await client.get("/healthz")).status_code == 200


# --- a database that holds a lock, or stops answering: bounded, never a hang ---------------


def _assert_database_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] in ("database_unavailable", "overloaded"), response.text
    assert "retry-after" in response.headers


async def _prepare_ingest(client: Client, admin: dict[str, str]) -> dict[str, Any]:
    """A tenant and a meter, and one event for them; returns a fresh event to post."""
    workload = IngestWorkload(admin)
    tally = Tally()
    await workload._prepare(client, tally)
    assert not tally.violations, tally.violations
    return workload._event("after-the-lock", 1)


@pytest.mark.parametrize(
    ("bound", "timeouts"),
    [
        # PostgreSQL gives up waiting for the lock: 55P03 lock_not_available.
        ("lock_timeout", {"db_lock_timeout_seconds": 0.5, "db_statement_timeout_seconds": 5.0}),
        # No lock timeout: the statement as a whole is cancelled, 57014 query_canceled.
        ("statement_timeout", {"db_lock_timeout_seconds": 0, "db_statement_timeout_seconds": 0.5}),
    ],
)
@pytest.mark.parametrize("table", ["tenants", "events"])
async def test_a_lock_held_longer_than_the_timeout_gives_503_within_the_timeout(
    private_database: str, bound: str, timeouts: dict[str, float], table: str
) -> None:
    """Another session holds an exclusive lock for 8 s: the request (a read of tenants through
    the ORM session, or an event through the group-commit path) answers 503 once the bound
    passes, instead of waiting the 8 s (it used to wait for as long as the lock was held)."""
    await _truncate(private_database)
    settings = make_settings(private_database, **OUTAGE_SETTINGS, **timeouts)
    admin = await create_key(settings, "admin")
    holder = await asyncpg.connect(asyncpg_dsn(private_database))
    try:
        async with in_loop_client(create_app(settings)) as client:
            event = await _prepare_ingest(client, admin)
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            if table == "tenants":
                request = client.get("/v1/tenants", headers=admin)
            else:
                request = client.post("/v1/events", json=event, headers=admin)
            started = time.monotonic()
            response = await asyncio.wait_for(request, 8.0)
            elapsed = time.monotonic() - started
            _assert_database_unavailable(response)
            assert response.json()["code"] == "database_unavailable"
            assert elapsed < 2.5, f"{bound}: answered after {elapsed:.1f} s"
            await transaction.rollback()
            # The lock is gone: the same request succeeds, the pool did not keep broken
            # connections.
            if table == "tenants":
                again = await client.get("/v1/tenants", headers=admin)
                assert again.status_code == 200, again.text
            else:
                again = await client.post("/v1/events", json=event, headers=admin)
                assert again.status_code == 202, again.text
    finally:
        await holder.close()


async def test_a_frozen_database_gives_503_within_the_timeouts_and_readyz_says_so(
    private_database: str,
) -> None:
    """PostgreSQL stops answering (a proxy in front of it holds every byte): concurrent requests
    answer 503 within the connect/command bounds, /readyz answers 503 within its own timeout,
    and the service serves again once the database answers. Before the bounds existed, the
    requests and /readyz hung for as long as the database did."""
    await _truncate(private_database)
    proxy = await StallingProxy(private_database).start()
    settings = make_settings(
        proxy.url(private_database),
        **OUTAGE_SETTINGS,
        db_statement_timeout_seconds=1.0,
        db_command_timeout_seconds=1.5,
        readiness_timeout_seconds=1.0,
        # Warm caches: ingestion goes straight to its group commit, reads straight to the query.
        api_key_cache_seconds=300.0,
        reference_cache_seconds=300.0,
    )
    admin = await create_key(settings, "admin")
    try:
        async with in_loop_client(create_app(settings)) as client:
            event = await _prepare_ingest(client, admin)
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/v1/tenants", headers=admin)).status_code == 200
            proxy.stall()

            async def timed(send: Awaitable[Any]) -> tuple[Any, float]:
                started = time.monotonic()
                response = await asyncio.wait_for(send, 20.0)
                return response, time.monotonic() - started

            ready, ready_seconds = await timed(client.get("/readyz"))
            assert ready.status_code == 503, ready.text
            assert ready.headers["retry-after"] == "1"
            assert ready_seconds < 2.0, f"/readyz answered after {ready_seconds:.1f} s"
            reads = [timed(client.get("/v1/tenants", headers=admin)) for _ in range(4)]
            writes = [
                timed(
                    client.post(
                        "/v1/events", json={**event, "idempotency_key": f"f{n}"}, headers=admin
                    )
                )
                for n in range(4)
            ]
            answers = await asyncio.gather(*reads, *writes)
            for response, _ in answers:
                _assert_database_unavailable(response)
            slowest = max(seconds for _, seconds in answers)
            # Worst case: queued for the pool (2 s), then one bounded attempt (2 s to connect
            # or 1.5 s for a command); far below the 20 s the database stays frozen for here.
            assert slowest < 6.0, f"slowest answer after {slowest:.1f} s"
            assert (await client.get("/healthz")).status_code == 200

            proxy.resume()
            await wait_until_ready(client)
            again = await client.get("/v1/tenants", headers=admin)
            assert again.status_code == 200, again.text
            stored = await client.post("/v1/events", json=event, headers=admin)
            assert stored.status_code == 202, stored.text
    finally:
        await proxy.close()


# --- the mapping itself, for errors a test cannot easily provoke ---------------------------


def _wrapped_asyncpg_error(error: Exception) -> DBAPIError:
    """What SQLAlchemy raises for an asyncpg error: a DBAPIError whose .orig is the dialect's
    DB-API adapter error, caused by asyncpg's exception (as observed with SQLAlchemy 2.1)."""
    dbapi = asyncpg_dialect.import_dbapi()
    adapted = dbapi.Error(str(error))
    adapted.sqlstate = getattr(error, "sqlstate", None)
    adapted.__cause__ = error
    wrapped = DBAPIError.instance(None, None, adapted, dbapi.Error)
    assert isinstance(wrapped, DBAPIError)
    return wrapped


ERRORS: dict[str, Callable[[], BaseException]] = {
    # PostgreSQL is starting up or shutting down (57P03): the window around a restart.
    "starting up": lambda: _wrapped_asyncpg_error(
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    ),
    # 53300: max_connections reached.
    "too many connections": lambda: _wrapped_asyncpg_error(
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already")
    ),
    # 57P01 raised by asyncpg directly (code using the driver connection, e.g. ingestion).
    "admin shutdown, unwrapped": lambda: asyncpg.exceptions.AdminShutdownError(
        "terminating connection due to administrator command"
    ),
    "connection closed, unwrapped": lambda: asyncpg.exceptions.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"
    ),
    "refused": lambda: ConnectionRefusedError(111, "Connect call failed"),
    # Our own bounds: statement_timeout (57014), lock_timeout (55P03), wrapped by SQLAlchemy
    # or raised by asyncpg directly (ingestion), and asyncpg's client-side command_timeout.
    "statement timeout": lambda: _wrapped_asyncpg_error(
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout")
    ),
    "lock timeout": lambda: _wrapped_asyncpg_error(
        asyncpg.exceptions.LockNotAvailableError("canceling statement due to lock timeout")
    ),
    "lock timeout, unwrapped": lambda: asyncpg.exceptions.LockNotAvailableError(
        "canceling statement due to lock timeout"
    ),
}


async def _refused_by_the_driver() -> None:
    """asyncpg connecting to a port nobody listens on: its ConnectionRefusedError comes out
    unwrapped, raised inside asyncpg (as when the pool opens a connection to a stopped
    database)."""
    await asyncpg.connect(host="127.0.0.1", port=1, user="nobody", database="none", timeout=5)


async def _command_timeout_in_the_driver(database_url: str) -> None:
    """asyncpg's own command timeout on a statement the server is slow to answer: a bare
    TimeoutError, raised inside asyncpg (as when the database froze)."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute("SELECT pg_sleep(2)", timeout=0.05)
    finally:
        connection.terminate()


@pytest.mark.parametrize("name", [*sorted(ERRORS), "refused", "command timeout"])
async def test_database_connection_errors_map_to_503(name: str, database_url: str) -> None:
    @get("/boom")
    async def boom() -> None:
        if name == "refused":
            await _refused_by_the_driver()
        if name == "command timeout":
            await _command_timeout_in_the_driver(database_url)
        raise ERRORS[name]()

    app = Litestar([boom], exception_handlers=EXCEPTION_HANDLERS)
    async with AsyncTestClient(app=app) as client:
        response = await client.get("/boom")
    assert response.status_code == 503, response.text
    assert msgspec.json.decode(response.content)["code"] == "database_unavailable"
    assert response.headers["retry-after"] == "1"


async def test_other_database_errors_stay_500() -> None:
    """A programming error must not hide behind 'retry later'."""

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise _wrapped_asyncpg_error(
            asyncpg.exceptions.UndefinedTableError('relation "nope" does not exist')
        )

    app = Litestar([boom], exception_handlers=EXCEPTION_HANDLERS)
    async with AsyncTestClient(app=app) as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"


@pytest.mark.parametrize(
    "error",
    [
        OSError(36, "File name too long"),  # what zoneinfo raised for a 256-character zone
        ConnectionRefusedError(111, "Connect call failed"),  # e.g. from an HTTP call
        ValueError("bad value"),
    ],
    ids=["file name too long", "refused elsewhere", "caused by an OSError"],
)
async def test_errors_raised_outside_the_database_driver_are_not_outages(
    error: Exception,
) -> None:
    """Only the database failing may answer 503 database_unavailable: an OSError (or an error
    caused by one) raised by our own code or another library is a 500 to fix."""

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        if isinstance(error, ValueError):
            raise error from OSError(2, "No such file or directory")
        raise error

    app = Litestar([boom], exception_handlers=EXCEPTION_HANDLERS)
    async with AsyncTestClient(app=app) as client:
        response = await client.get("/boom")
    assert response.status_code == 500, response.text
    assert response.json()["code"] == "internal_error"


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (
            asyncpg.exceptions.CharacterNotInRepertoireError(
                'invalid byte sequence for encoding "UTF8": 0x00'
            ),
            "NUL",
        ),
        (
            asyncpg.exceptions.DatetimeFieldOverflowError("date/time field value out of range"),
            "date",
        ),
        (asyncpg.exceptions.DataError("cannot encode Decimal value"), "store"),
    ],
    ids=["NUL", "date", "driver's own data error"],
)
async def test_values_the_database_refuses_are_422_in_our_words(
    error: Exception, words: str
) -> None:
    """The fallback for a value no check caught before the database: 422, without the
    driver's or PostgreSQL's message."""

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise _wrapped_asyncpg_error(error)

    app = Litestar([boom], exception_handlers=EXCEPTION_HANDLERS)
    async with AsyncTestClient(app=app) as client:
        response = await client.get("/boom")
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert words in problem["detail"]
    for driver_words in ("UTF8", "0x00", "cannot encode", "out of range", "date/time field"):
        assert driver_words not in problem["detail"], problem
