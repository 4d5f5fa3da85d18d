"""Rebuild a tenant's rollups from raw events over a time range (repair, or after a change to how
rollups are computed), then fold them into the hour to month levels again. Raw events
older than retention are gone, so a rebuild may only cover ranges whose raw events are all still
kept."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from service.common.errors import InvalidInput, NotFound
from service.common.progress import NO_PROGRESS, Progress
from service.common.time import is_on_quarter_hour
from service.db.connections import driver_connection, driver_transaction
from service.rollups.fold import fold_rollups
from service.rollups.models import BUCKET_MINUTES
from service.rollups.upkeep import rebuild_rollups
from service.settings import Settings


@dataclass(frozen=True, slots=True)
class RebuildReport:
    tenant_id: str
    start: datetime
    end: datetime
    rollups_deleted: int
    rollups_written: int
    rows_folded: int


async def rebuild_tenant_rollups(
    engine: AsyncEngine,
    settings: Settings,
    tenant_id: str,
    start: datetime,
    end: datetime,
    progress: Progress = NO_PROGRESS,
) -> RebuildReport:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput("--from and --to must carry a UTC offset, e.g. 2026-10-01T00:00:00Z")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if not (is_on_quarter_hour(start) and is_on_quarter_hour(end)):
        raise InvalidInput(f"--from and --to must fall on {BUCKET_MINUTES}-minute boundaries")
    if start >= end:
        raise InvalidInput("--from must be before --to")
    async with driver_transaction(engine) as connection:
        retention = await connection.fetchval(
            "SELECT coalesce(retention_days, $2) FROM tenants WHERE id = $1",
            tenant_id,
            settings.retention_days,
        )
        if retention is None:
            raise NotFound(f"tenant '{tenant_id}' does not exist")
        cutoff = datetime.now(UTC) - timedelta(days=int(retention))
        if start < cutoff:
            raise InvalidInput(
                f"raw events before {cutoff:%Y-%m-%d %H:%M} UTC may already be deleted by "
                f"retention ({retention} days); rebuilding from them would lose usage"
            )
        deleted, written = await rebuild_rollups(connection, tenant_id, start, end, progress)
    # The rebuild left the months it touched pending in the coarse levels; fold them now
    # (reads are exact meanwhile, only slower).
    async with driver_connection(engine) as connection:
        folded = await fold_rollups(connection, tenant_id=tenant_id, bar=progress)
    return RebuildReport(tenant_id, start, end, deleted, written, folded)
