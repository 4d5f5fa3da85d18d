"""The transaction modes of service.db.connections: SQL run on the request session's driver
connection belongs to the session's transaction, even when it is the first statement."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.connections import request_transaction, session_driver

INSERT = "INSERT INTO tenants (id, name, currency, timezone) VALUES ($1, $1, 'USD', 'UTC')"


async def test_session_driver_runs_in_the_session_transaction(
    sessionmaker: async_sessionmaker[AsyncSession], pg_pool: asyncpg.Pool
) -> None:
    with pytest.raises(RuntimeError):
        async with request_transaction(sessionmaker) as session:
            driver = await session_driver(session)  # the first statement of the session
            assert driver.is_in_transaction()
            await driver.execute(INSERT, "rolled-back")
            raise RuntimeError("the handler failed")
    async with request_transaction(sessionmaker) as session:
        await (await session_driver(session)).execute(INSERT, "committed")
    names = [r["id"] for r in await pg_pool.fetch("SELECT id FROM tenants ORDER BY id")]
    assert names == ["committed"]
