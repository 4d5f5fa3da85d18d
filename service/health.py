"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from litestar import Controller, Response, get
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.paths import ALEMBIC_INI
from service.settings import Settings

# Readiness checks given up on, kept referenced until their cancellation has finished.
_abandoned: set[asyncio.Future[set[str]]] = set()


def migration_heads() -> set[str]:
    return set(ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_heads())


class HealthController(Controller):
    include_in_schema = True
    tags = ["operations"]

    @get("/healthz", summary="Liveness: the process answers")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="Readiness: database reachable and migrations at head")
    async def readyz(
        self, db_engine: AsyncEngine, expected_heads: set[str], settings: Settings
    ) -> Response[Any]:
        # Bounded: a probe that hangs with a stuck database (or behind a pool full of stuck
        # requests) would only time out in the kubelet, which tells nobody why. The check runs
        # as its own task and is abandoned (cancelled) on time-out rather than awaited: undoing
        # a connection in the middle of a query waits for the driver's own command timeout.
        timeout = settings.readiness_timeout_seconds
        check = asyncio.ensure_future(_applied_migrations(db_engine))
        done, _ = await asyncio.wait({check}, timeout=timeout)
        if not done:
            check.cancel()
            _abandoned.add(check)
            check.add_done_callback(_abandoned.discard)
            return _unavailable(f"database: no answer within {timeout:g} s")
        try:
            current = check.result()
        except Exception as exc:  # any failure here means "not ready", never a 500
            return _unavailable(f"database: {type(exc).__name__}")
        if current != expected_heads:
            return Response(
                {
                    "status": "unavailable",
                    "detail": "migrations are not at head; run `python -m service migrate`",
                    "current": sorted(current),
                    "head": sorted(expected_heads),
                },
                status_code=503,
            )
        return Response({"status": "ok"})


async def _applied_migrations(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return {row[0] for row in rows}


def _unavailable(detail: str) -> Response[Any]:
    return Response(
        {"status": "unavailable", "detail": detail},
        status_code=503,
        headers={"Retry-After": "1"},
    )
