"""Engine and session factory. How connections and sessions are used (the request's
transaction, autocommit statements, dedicated connections) is written down in
service.db.connections."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.db.pool import ObservedQueuePool
from service.db.url import async_url
from service.settings import Settings


def create_engine(settings: Settings, database_url: str) -> AsyncEngine:
    return create_async_engine(
        async_url(database_url),
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout_seconds,
        poolclass=ObservedQueuePool,
        # asyncpg waits 60 s for a connection by default: an unreachable database would hold
        # requests that long instead of answering 503 after the pool timeout.
        connect_args={
            "server_settings": {"application_name": "metering"},
            "timeout": settings.db_pool_timeout_seconds,
        },
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
