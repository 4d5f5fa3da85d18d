"""A service a controller's handlers all use, handed to them as a Litestar dependency: each
handler names the service it calls instead of building it from the request's session and the
settings itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncSession

from service.settings import Settings

S = TypeVar("S")


def provide_service(service: Callable[[AsyncSession, Settings], S]) -> Provide:
    """The dependency that builds `service` on the request's database session and settings."""

    async def build(db_session: AsyncSession, settings: Settings) -> S:
        return service(db_session, settings)

    return Provide(build)
