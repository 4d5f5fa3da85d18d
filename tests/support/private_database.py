"""A database of its own for tests that disrupt connections (killing every backend of the
shared test database would break unrelated tests), plus an admin key in it."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from service.db.migrations import upgrade_to_head
from service.db.session import create_engine, create_sessionmaker
from service.settings import Settings
from service.tenants.schemas import ApiKeyCreate
from service.tenants.service import ApiKeyService
from tests.support.database import create_database, drop_database

T = TypeVar("T")


def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def create_migrated_database(server_url: str) -> str:
    url = _in_thread(asyncio.run, create_database(server_url))
    _in_thread(upgrade_to_head, url)
    return url


def drop_private_database(server_url: str, url: str) -> None:
    _in_thread(asyncio.run, drop_database(server_url, url))


async def create_key(settings: Settings, *scopes: str, name: str = "outage") -> dict[str, str]:
    engine = create_engine(settings, settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            created = await ApiKeyService(session, settings).create(
                ApiKeyCreate(name=name, scopes=list(scopes))  # type: ignore[arg-type]
            )
    finally:
        await engine.dispose()
    return {"Authorization": f"Bearer {created.key}"}
