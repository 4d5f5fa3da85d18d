"""Database connections and their transaction modes."""

from __future__ import annotations

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession


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
