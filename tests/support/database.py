"""Where the tests' PostgreSQL comes from: TEST_DATABASE_URL, else a testcontainers PostgreSQL
when a Docker engine answers, else the embedded PostgreSQL (pgserver) under .data/."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from service.db.url import asyncpg_dsn

ROOT = Path(__file__).resolve().parents[2]


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def server_url() -> Iterator[tuple[str, str]]:
    """Yield (url of a database we may CREATE DATABASE from, a label saying where it runs)."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url, "TEST_DATABASE_URL"
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url(), "testcontainers"
        return
    from service.db.embedded import start_embedded_postgres

    yield start_embedded_postgres(ROOT / ".data" / "test"), "embedded"


async def create_database(server: str) -> str:
    """A fresh, uniquely named database on the server; return its URL."""
    name = f"metering_test_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


async def drop_database(server: str, url: str) -> None:
    name = make_url(url).database
    connection = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
