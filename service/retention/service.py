"""Retention (DESIGN §6): delete raw events past their tenant's retention period in bounded
batches, one process at a time.

Only the `events` table is touched: rollups and finalized invoices stay, so no usage query or
invoice changes when raw events go. Each batch is one short transaction followed by a pause, so
ingestion keeps its speed while a run is under way."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from service.common.metrics import (
    RETENTION_BATCHES,
    RETENTION_DELETED,
    RETENTION_DURATION,
    RETENTION_LAST_SUCCESS,
)
from service.db.url import asyncpg_dsn
from service.retention.repository import (
    BEFORE_ANY_EVENT,
    RetentionRepository,
    TenantRetentionSetting,
)
from service.retention.schemas import RetentionReport, TenantRetention
from service.settings import Settings

log = structlog.get_logger("service.retention")

# The in-service loop's first run waits this long after startup (never longer than the
# interval), so a restart is not slowed by it.
FIRST_RUN_DELAY_SECONDS = 30.0
# A long purge logs its progress this often.
PROGRESS_LOG_SECONDS = 10.0

TenantCallback = Callable[[TenantRetention], None]


class RetentionError(Exception):
    """A retention run cannot start as asked (unknown tenant, retention shorter than the
    late-arrival window)."""


def retention_refusal(days: int, settings: Settings, what: str) -> str | None:
    """Why a retention of `days` must not be applied, or None when it may."""
    if days >= settings.late_arrival_days:
        return None
    return (
        f"{what} ({days} days) is shorter than the late-arrival window "
        f"(METERING_LATE_ARRIVAL_DAYS = {settings.late_arrival_days} days): an event re-sent "
        "within the window could be counted twice once its original is deleted; refusing to "
        "delete"
    )


class RetentionJob:
    """One pass over the tenants, on a repository whose connection the caller owns."""

    def __init__(
        self,
        settings: Settings,
        repository: RetentionRepository,
        *,
        now: datetime,
        on_tenant: TenantCallback | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.now = now
        self.on_tenant = on_tenant

    async def run(self, *, dry_run: bool, tenant_id: str | None = None) -> RetentionReport:
        started = time.perf_counter()
        tenants = await self.repository.tenants(tenant_id)
        if tenant_id is not None and not tenants:
            raise RetentionError(f"unknown tenant {tenant_id!r}")
        report = RetentionReport(dry_run=dry_run)
        for tenant in tenants:
            result = await self._apply(tenant, dry_run=dry_run)
            report.tenants.append(result)
            if self.on_tenant is not None:
                self.on_tenant(result)
        report.seconds = time.perf_counter() - started
        return report

    async def _apply(self, tenant: TenantRetentionSetting, *, dry_run: bool) -> TenantRetention:
        days = tenant.retention_days or self.settings.retention_days
        result = TenantRetention(
            tenant_id=tenant.tenant_id,
            retention_days=days,
            cutoff=self.now - timedelta(days=days),
        )
        # Tenants' overrides are validated by the API; a row written otherwise, or a late
        # window raised since, must still never lead to deleting events that may be re-sent.
        refusal = retention_refusal(days, self.settings, f"tenant {tenant.tenant_id!r} retention")
        if refusal is not None:
            log.error("retention.refused", tenant_id=tenant.tenant_id, reason=refusal)
            result.error = refusal
            return result
        if dry_run:
            result.rows = await self.repository.count_expired(tenant.tenant_id, result.cutoff)
            log.info(
                "retention.dry_run",
                tenant_id=tenant.tenant_id,
                cutoff=result.cutoff.isoformat(),
                rows=result.rows,
            )
            return result
        await self._purge(result)
        return result

    async def _purge(self, result: TenantRetention) -> None:
        """Delete the tenant's expired events batch by batch until none is left."""
        batch_size = self.settings.retention_batch_size
        pause = self.settings.retention_pause_seconds
        started = time.perf_counter()
        next_progress_log = started + PROGRESS_LOG_SECONDS
        after = BEFORE_ANY_EVENT
        while True:
            batch = await self.repository.delete_batch(
                result.tenant_id, result.cutoff, after, batch_size
            )
            if batch.rows == 0 or batch.last_ts is None:
                break
            after = batch.last_ts
            result.rows += batch.rows
            result.batches += 1
            RETENTION_DELETED.inc(batch.rows)
            RETENTION_BATCHES.inc()
            now = time.perf_counter()
            if now >= next_progress_log:
                next_progress_log = now + PROGRESS_LOG_SECONDS
                log.info("retention.progress", **_progress(result, now - started))
            # A short batch means the tenant is (nearly) done: no need to give way first.
            if batch.rows >= batch_size and pause > 0:
                await asyncio.sleep(pause)
        result.seconds = time.perf_counter() - started
        log.info(
            "retention.tenant_done",
            cutoff=result.cutoff.isoformat(),
            **_progress(result, result.seconds),
        )


def _progress(result: TenantRetention, seconds: float) -> dict[str, Any]:
    return {
        "tenant_id": result.tenant_id,
        "batches": result.batches,
        "rows": result.rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(result.rows / seconds) if seconds > 0 else None,
    }


async def run_retention(
    settings: Settings,
    database_url: str,
    *,
    dry_run: bool = False,
    tenant_id: str | None = None,
    now: datetime | None = None,
    lock: bool = True,
    on_tenant: TenantCallback | None = None,
) -> RetentionReport:
    """One retention run on its own connection.

    A real run first takes the retention advisory lock on that connection and keeps it to the
    end; when another process holds it, the run does nothing and reports `skipped`. A dry run
    only counts, so it takes no lock. `lock=False` is for tests of concurrent runs (SKIP LOCKED
    alone keeps them correct)."""
    refusal = retention_refusal(settings.retention_days, settings, "METERING_RETENTION_DAYS")
    if refusal is not None:
        raise RetentionError(refusal)
    now = now or datetime.now(UTC)
    connection = await asyncpg.connect(
        asyncpg_dsn(database_url), server_settings={"application_name": "metering-retention"}
    )
    try:
        repository = RetentionRepository(connection)
        if lock and not dry_run and not await repository.try_lock():
            log.info("retention.skipped", reason="another process holds the retention lock")
            return RetentionReport(dry_run=dry_run, skipped=True)
        job = RetentionJob(settings, repository, now=now, on_tenant=on_tenant)
        report = await job.run(dry_run=dry_run, tenant_id=tenant_id)
    finally:
        # Ending the session also releases its advisory lock.
        await _close(connection)
    log.info(
        "retention.done",
        dry_run=dry_run,
        tenants=len(report.tenants),
        rows=report.rows,
        batches=report.batches,
        seconds=round(report.seconds, 3),
        rows_per_second=None if dry_run else round(report.rows_per_second),
        refused=len(report.errors),
    )
    if not dry_run:
        RETENTION_DURATION.observe(report.seconds)
        if report.ok:
            RETENTION_LAST_SUCCESS.set_to_current_time()
    return report


async def _close(connection: Any) -> None:
    try:
        await connection.close(timeout=5)
    except Exception:
        connection.terminate()


async def retention_loop(
    settings: Settings, database_url: str, *, first_delay: float = FIRST_RUN_DELAY_SECONDS
) -> None:
    """Run retention every `retention_interval_seconds` until cancelled. Every worker of every
    replica runs this loop; the advisory lock lets one of them work at a time, the others skip
    quietly. A failed run is logged and retried at the next interval."""
    delay = min(first_delay, settings.retention_interval_seconds)
    while True:
        await asyncio.sleep(delay)
        delay = settings.retention_interval_seconds
        try:
            await run_retention(settings, database_url)
        except Exception:
            log.exception("retention.failed")


def start_retention_loop(
    settings: Settings, database_url: str, *, first_delay: float = FIRST_RUN_DELAY_SECONDS
) -> asyncio.Task[None] | None:
    """The in-service scheduler, or None when METERING_RETENTION_INTERVAL_SECONDS is 0."""
    if settings.retention_interval_seconds <= 0:
        return None
    return asyncio.create_task(
        retention_loop(settings, database_url, first_delay=first_delay), name="retention-loop"
    )


async def stop_retention_loop(task: asyncio.Task[None] | None) -> None:
    """Cancel the loop and wait for it: an in-flight batch is rolled back, never half-done."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
