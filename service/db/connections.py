"""Database connections and their transaction modes: every way the service talks to
PostgreSQL starts here.

1. **The request session** (`request_transaction`, provided to handlers as `db_session`): one
   SQLAlchemy `AsyncSession`, one transaction per request. It commits when the handler
   returned normally (its response is then a 2xx), before the response is sent, so a 2xx
   means durable; any exception rolls it back. Services and repositories never commit or roll
   back themselves. SQL that needs the driver inside that same transaction (the rollup read
   path of invoices) gets the session's asyncpg connection from `session_driver`.
2. **Autocommit statements on a driver connection** (`driver_connection`): a pooled asyncpg
   connection outside any explicit transaction, so each statement is its own transaction,
   committed when it returns, with no BEGIN/COMMIT round trips. Ingestion writes events and
   their rollups with one statement this way (the hot path). A caller may open a short
   transaction on it for reads that must share a snapshot (the rollup store reads usage in a
   read-only REPEATABLE READ transaction: a check for unfolded rows, then the read).
   `driver_transaction` is the same connection inside one explicit
   transaction, committed on exit (event listing's consistent reads, rollup rebuilds; the
   rebuild command takes it from its own engine, `create_maintenance_engine` in
   service.db.session, whose statements are not cut short by the request timeouts).
3. **Dedicated connections for long jobs** (`dedicated_connection`): an asyncpg connection of
   its own, outside the request pool, for jobs that run long or hold a session-level advisory
   lock (retention, the rollup fold), so they neither take a request's connection nor leave a
   lock on a pooled one. The job commits as it goes (each retention batch, each fold chunk its
   own transaction).

Connections of 1. and 2. share one pool per process (`METERING_DB_POOL_SIZE`) and carry the
request engine's time bounds (service.db.session). Caches that load reference data outside
any request (API keys, ingestion's tenants and meters) read in a short session of their own
from the same sessionmaker, and only read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.common.errors import ServiceError
from service.db.url import asyncpg_dsn


@asynccontextmanager
async def request_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """The request's session: commit when the body succeeded, else roll back and re-raise."""
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


async def session_driver(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the request session, inside the session's transaction
    (begun here if nothing ran in it yet: SQLAlchemy begins lazily, at the first statement).
    What runs on it commits or rolls back with the session."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection  # type: ignore[assignment]
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return driver


@asynccontextmanager
async def _pooled_driver(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """The asyncpg connection under one of the service pool's connections.

    SQLAlchemy does not see errors raised by the driver used directly, so it would put a
    broken connection (killed by a restart) or one still busy with a cancelled query back in
    the pool. Any failure other than a domain error therefore invalidates the connection: the
    pool drops it and opens a fresh one when needed."""
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection  # type: ignore[assignment]
        try:
            yield driver
        except ServiceError:
            raise
        except BaseException:
            await asyncio.shield(connection.invalidate())
            raise


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection in autocommit mode: each statement is its own transaction."""
    async with _pooled_driver(engine) as driver:
        yield driver


@asynccontextmanager
async def driver_transaction(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection inside a transaction that commits on exit."""
    async with _pooled_driver(engine) as driver, driver.transaction():
        yield driver


@asynccontextmanager
async def dedicated_connection(
    database_url: str, application_name: str
) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own, outside the pool, closed on exit (which also ends its session's
    advisory locks); a close that does not finish in 5 s terminates it."""
    connection = await asyncpg.connect(
        asyncpg_dsn(database_url), server_settings={"application_name": application_name}
    )
    try:
        yield connection
    finally:
        try:
            await connection.close(timeout=5)
        except Exception:
            connection.terminate()
