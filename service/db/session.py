"""Engine and session factory. How connections and sessions are used (the request's
transaction, autocommit statements, dedicated connections) is written down in
service.db.connections.

Every connection of the request engine carries time bounds, so a database that stops answering
turns into a 503 `database_unavailable` within seconds instead of requests that hang:

- `statement_timeout` and `lock_timeout` (server side): PostgreSQL cancels a statement that
  runs, or waits for a lock, too long (SQLSTATE 57014 / 55P03), and the connection stays usable;
- asyncpg's `command_timeout` (client side): for a server that does not answer at all (frozen,
  network gone), the driver gives up and raises TimeoutError; the connection is then dropped.

Maintenance work (rollup rebuilds) uses `create_maintenance_engine`, with its own statement
timeout (none by default)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.db.pool import ObservedQueuePool
from service.db.url import async_url
from service.settings import Settings


def _milliseconds(seconds: float) -> str:
    """A PostgreSQL duration setting; "0" turns the timeout off."""
    return str(round(seconds * 1000))


def connect_args(
    settings: Settings,
    *,
    application_name: str = "metering",
    statement_timeout: float | None = None,
    command_timeout: float | None = None,
) -> dict[str, Any]:
    """asyncpg.connect() arguments with the service's time bounds (None: the request ones)."""
    if statement_timeout is None:
        statement_timeout = settings.db_statement_timeout_seconds
    if command_timeout is None:
        command_timeout = settings.db_command_timeout_seconds
    return {
        "server_settings": {
            "application_name": application_name,
            "statement_timeout": _milliseconds(statement_timeout),
            "lock_timeout": _milliseconds(settings.db_lock_timeout_seconds),
            # The service's statements are short aggregates over indexed ranges; a month of
            # rollups makes a plan look expensive enough for JIT compilation, which then costs
            # more (50-100+ ms) than the aggregation it speeds up.
            "jit": "off",
            # Rollups and their indexes live in memory (or on SSD): a page read out of key
            # order costs about what a sequential one does. At PostgreSQL's default (4, for
            # spinning disks) a month of (API key x model) cells, 160,000 index entries, was
            # planned as a parallel scan of the whole cube: 450 ms instead of 100.
            "random_page_cost": "1.1",
        },
        # asyncpg waits 60 s for a connection by default: an unreachable database would hold
        # requests that long instead of answering 503 after the pool timeout.
        "timeout": settings.db_pool_timeout_seconds,
        # asyncpg: None means no client-side bound.
        "command_timeout": command_timeout or None,
    }


def create_engine(settings: Settings, database_url: str) -> AsyncEngine:
    """The engine requests use: bounded statements (see the module docstring)."""
    return create_async_engine(
        async_url(database_url),
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout_seconds,
        poolclass=ObservedQueuePool,
        connect_args=connect_args(settings),
    )


def create_maintenance_engine(settings: Settings, database_url: str) -> AsyncEngine:
    """An engine for long maintenance commands (rollup rebuilds): statements may run for
    METERING_DB_MAINTENANCE_STATEMENT_TIMEOUT_SECONDS (0: no limit); lock waits keep the
    request bound, so a rebuild that cannot get its lock fails instead of queueing ingestion
    behind it."""
    timeout = settings.db_maintenance_statement_timeout_seconds
    return create_async_engine(
        async_url(database_url),
        pool_size=1,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args=connect_args(
            settings,
            application_name="metering-maintenance",
            statement_timeout=timeout,
            # The client waits a little longer than the server, or forever with no limit.
            command_timeout=timeout + 1 if timeout else 0,
        ),
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
