"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from litestar import Controller, Response, get
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.paths import ALEMBIC_INI


def migration_heads() -> set[str]:
    return set(ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_heads())


class HealthController(Controller):
    include_in_schema = True
    tags = ["operations"]

    @get("/healthz", summary="Liveness: the process answers")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="Readiness: database reachable and migrations at head")
    async def readyz(self, db_engine: AsyncEngine, expected_heads: set[str]) -> Response[Any]:
        try:
            async with db_engine.connect() as connection:
                rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
                current = {row[0] for row in rows}
        except Exception as exc:  # any failure here means "not ready", never a 500
            return Response(
                {"status": "unavailable", "detail": f"database: {type(exc).__name__}"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
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
