"""Test fixtures: a real PostgreSQL migrated with Alembic, the app, a client and API keys.

Each test session gets its own fresh database (so parallel runs never collide); each test
starts from empty tables (TRUNCATE), so tests are isolated from each other."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import psycopg2
import psycopg2.errors
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.app import create_app
from service.db.migrations import upgrade_to_head
from service.db.session import create_engine, create_sessionmaker
from service.db.url import asyncpg_dsn
from service.settings import Settings
from service.tenants.schemas import ApiKeyCreate
from service.tenants.service import ApiKeyService
from tests.support.database import create_database, drop_database, server_url

TEST_SECRET = "test-secret-key"
T = TypeVar("T")


@pytest.fixture(scope="session")
def database_server() -> Iterator[str]:
    with server_url() as (url, where):
        print(f"\n[tests] PostgreSQL from {where}")
        yield url


def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking setup (which may itself call asyncio.run) off the tests' event loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


@pytest.fixture(scope="session")
def database_url(database_server: str) -> Iterator[str]:
    url = in_thread(asyncio.run, create_database(database_server))
    in_thread(upgrade_to_head, url)
    yield url
    in_thread(asyncio.run, drop_database(database_server, url))


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": TEST_SECRET,
        "api_key_cache_seconds": 0.0,
        "reference_cache_seconds": 0.0,
        "json_logs": False,
        "log_level": "WARNING",
        "workers": 1,
        "retention_interval_seconds": 0.0,
        "rollup_fold_interval_seconds": 0.0,
        # Tests that need the webhook sender start an app of their own (tests/webhooks).
        "webhook_send_interval_seconds": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture(scope="session")
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
async def pg_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(asyncpg_dsn(database_url), min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture(autouse=True)
def _clean_database(request: pytest.FixtureRequest) -> None:
    """Empty every table before each test that uses the database (sync, off the loop)."""
    if "database_url" not in request.fixturenames:
        return
    url = make_url(request.getfixturevalue("database_url")).set(drivername="postgresql")
    connection = psycopg2.connect(url.render_as_string(hide_password=False))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            )
            names = ", ".join(f'"{row[0]}"' for row in cursor.fetchall())
            # A connection some earlier test left inside a transaction would block TRUNCATE
            # forever: fail loudly instead, naming what holds the lock.
            cursor.execute("SET lock_timeout = '15s'")
            try:
                cursor.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
            except psycopg2.errors.LockNotAvailable:
                connection.rollback()
                cursor.execute(
                    "SELECT pid, state, left(query, 200) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND state LIKE 'idle in transaction%'"
                )
                holders = cursor.fetchall()
                pytest.fail(f"a previous test left open transactions: {holders}")
    finally:
        connection.close()
    if "app" in request.fixturenames:
        request.getfixturevalue("app").state.key_verifier.forget()


@pytest.fixture(scope="session")
async def sessionmaker(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings, settings.database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@dataclass
class Keys:
    """Bearer headers: `admin` is ready; `make(*scopes, tenant_id=…)` creates more."""

    make: Callable[..., Awaitable[dict[str, str]]]
    admin: dict[str, str]


@pytest.fixture
async def keys(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> Keys:
    async def make(
        *scopes: str, tenant_id: str | None = None, name: str = "test"
    ) -> dict[str, str]:
        async with sessionmaker() as session, session.begin():
            created = await ApiKeyService(session, settings).create(
                ApiKeyCreate(name=name, scopes=list(scopes), tenant_id=tenant_id)  # type: ignore[arg-type]
            )
        return {"Authorization": f"Bearer {created.key}"}

    return Keys(make=make, admin=await make("admin", name="admin"))
