"""Alembic environment: async engine, the service's own settings for the URL, a lock_timeout so a
migration never queues behind long transactions while blocking everyone else."""

from __future__ import annotations

import asyncio

from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from service.db.models import Base
from service.db.url import async_url

config = context.config
target_metadata = Base.metadata
LOCK_TIMEOUT = "5s"


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return str(url)
    from service.db.embedded import start_embedded_postgres
    from service.settings import Settings

    settings = Settings.from_env()
    return settings.database_url or start_embedded_postgres(settings.data_dir)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(async_url(_database_url()), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    asyncio.run(_run_async())


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
