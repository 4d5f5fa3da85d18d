"""Retention: delete raw events past their tenant's retention period, and finished webhook
messages past METERING_WEBHOOK_RETENTION_DAYS, in bounded batches, one process at a time.

Of usage only the `events` table is touched: rollups and finalized invoices stay, so no usage
query or invoice changes when raw events go. Of the webhook outbox, only delivered and failed
messages go (with their attempts); a pending one is kept whatever its age, since it is still
to be sent. Each batch is one short transaction followed by a pause, so
ingestion keeps its speed while a run is under way."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from service.common.metrics import (
    RETENTION_BATCHES,
    RETENTION_DELETED,
    RETENTION_DURATION,
    RETENTION_LAST_SUCCESS,
)
from service.common.progress import NO_PROGRESS, Progress
from service.db.connections import dedicated_connection
from service.retention.repository import (
    BEFORE_ANY_EVENT,
    RetentionRepository,
    TenantRetentionSetting,
)
from service.retention.schemas import DeliveryRetention, RetentionReport, TenantRetention
from service.settings import Settings

log = structlog.get_logger("service.retention")

# The in-service loop's first run waits this long after startup (never longer than the
# interval), so a restart is not slowed by it.
FIRST_RUN_DELAY_SECONDS = 30.0
# A long purge logs its progress this often.
PROGRESS_LOG_SECONDS = 10.0
# The purge moves through event time in windows of about this many events (all tenants
# together): some 2,000 pages of the events table, which stay in shared buffers while every
# tenant's batches in the window go over them. The window's length adapts to the events'
# density, within these bounds.
WINDOW_TARGET_ROWS = 100_000
FIRST_WINDOW = timedelta(days=1)
MIN_WINDOW = timedelta(seconds=1)
MAX_WINDOW = timedelta(days=3660)

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


@dataclass
class _Cursor:
    """Where the purge of one tenant stands."""

    result: TenantRetention
    # The time of the tenant's oldest expired event not yet deleted; None once none is left.
    next_ts: datetime | None


def next_window(window: timedelta, rows: int) -> timedelta:
    """The next window: scaled so that it holds about WINDOW_TARGET_ROWS events if the coming
    events are as dense as the `rows` just deleted, by at most 4x either way."""
    factor = 4.0 if rows == 0 else min(4.0, max(0.25, WINDOW_TARGET_ROWS / rows))
    return min(MAX_WINDOW, max(MIN_WINDOW, window * factor))


class RetentionJob:
    """One pass over the tenants, on a repository whose connection the caller owns.

    The purge walks forward through event time one window at a time, and within a window
    deletes the expired events of every tenant before it moves on. Ingestion lays the events of
    all tenants out on disk in time order, interleaved, so a window is a stretch of the table's
    pages: each page is written while it is in memory, once per checkpoint. Going tenant after
    tenant over a long backlog wrote every page again for each tenant, each time with a full-page
    image in the WAL: deleting 5M events of 4 tenants (rows then locked before deletion) wrote
    599 bytes of WAL per event that way, and 263 window by window."""

    def __init__(
        self,
        settings: Settings,
        repository: RetentionRepository,
        *,
        now: datetime,
        on_tenant: TenantCallback | None = None,
        progress: Progress = NO_PROGRESS,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.now = now
        self.on_tenant = on_tenant
        self.progress = progress
        self._started = time.perf_counter()
        self._rows = self._batches = self._since_pause = 0
        self._next_progress_log = self._started + PROGRESS_LOG_SECONDS

    async def run(self, *, dry_run: bool, tenant_id: str | None = None) -> RetentionReport:
        self._started = time.perf_counter()
        self._next_progress_log = self._started + PROGRESS_LOG_SECONDS
        tenants = await self.repository.tenants(tenant_id)
        if tenant_id is not None and not tenants:
            raise RetentionError(f"unknown tenant {tenant_id!r}")
        report = RetentionReport(dry_run=dry_run)
        to_purge = []
        if dry_run:
            self.progress.start("counting expired events (tenants)", len(tenants))
        for tenant in tenants:
            result = self._prepare(tenant)
            report.tenants.append(result)
            if result.error is not None:
                self._finish(result)
            elif dry_run:
                result.rows = await self.repository.count_expired(tenant.tenant_id, result.cutoff)
                log.info(
                    "retention.dry_run",
                    tenant_id=tenant.tenant_id,
                    cutoff=result.cutoff.isoformat(),
                    rows=result.rows,
                )
                self._finish(result)
                self.progress.advance()
            else:
                to_purge.append(result)
        if to_purge:
            await self._purge(to_purge)
        report.webhook_deliveries = await self._deliveries(dry_run=dry_run, tenant_id=tenant_id)
        report.seconds = time.perf_counter() - self._started
        return report

    async def _deliveries(self, *, dry_run: bool, tenant_id: str | None) -> DeliveryRetention:
        """Delete (count, in a dry run) delivered and failed webhook messages older than
        `webhook_retention_days`, in batches like events, pausing like them."""
        days = self.settings.webhook_retention_days
        result = DeliveryRetention(retention_days=days, cutoff=self.now - timedelta(days=days))
        if dry_run:
            result.rows = await self.repository.count_old_deliveries(result.cutoff, tenant_id)
            log.info(
                "retention.webhook_dry_run", cutoff=result.cutoff.isoformat(), rows=result.rows
            )
            return result
        total = None
        if self.progress.wants_total:
            total = await self.repository.count_old_deliveries(result.cutoff, tenant_id)
        self.progress.start("deleting old webhook deliveries", total)
        batch_size = self.settings.retention_batch_size
        while True:
            rows = await self.repository.delete_deliveries_batch(
                result.cutoff, batch_size, tenant_id
            )
            if rows:
                result.rows += rows
                result.batches += 1
                await self._count_batch(rows)
            if rows < batch_size:
                break
        (log.info if result.rows else log.debug)(
            "retention.webhook_deliveries_done",
            cutoff=result.cutoff.isoformat(),
            batches=result.batches,
            rows=result.rows,
        )
        return result

    def _prepare(self, tenant: TenantRetentionSetting) -> TenantRetention:
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

    async def _purge(self, results: list[TenantRetention]) -> None:
        """Delete these tenants' expired events, window by window, until none is left."""
        total = None
        if self.progress.wants_total:  # a person watches: worth a count first
            total = 0
            for result in results:
                total += await self.repository.count_expired(result.tenant_id, result.cutoff)
        self.progress.start("deleting expired events", total)
        cursors = []
        for result in results:
            oldest = await self.repository.oldest_expired(
                result.tenant_id, result.cutoff, BEFORE_ANY_EVENT
            )
            if oldest is None:
                self._finish(result, purged=True)
            else:
                cursors.append(_Cursor(result, oldest))
        window = FIRST_WINDOW
        while cursors:
            start = min(cursor.next_ts for cursor in cursors if cursor.next_ts is not None)
            end = start + window
            rows = 0
            for cursor in cursors:
                if cursor.next_ts is not None and cursor.next_ts < end:
                    rows += await self._purge_window(cursor, end)
            cursors = [cursor for cursor in cursors if cursor.next_ts is not None]
            window = next_window(window, rows)

    async def _purge_window(self, cursor: _Cursor, end: datetime) -> int:
        """Delete the tenant's expired events before `end`, in batches; move its cursor on."""
        result = cursor.result
        batch_size = self.settings.retention_batch_size
        upper = min(end, result.cutoff)
        after = cursor.next_ts or BEFORE_ANY_EVENT
        deleted = 0
        while True:
            batch = await self.repository.delete_batch(result.tenant_id, upper, after, batch_size)
            if batch.rows:
                deleted += batch.rows
                await self._account(result, batch.rows)
            # A short batch: nothing is left before `upper` (but rows another run holds).
            if batch.rows < batch_size or batch.last_ts is None:
                break
            after = batch.last_ts
        if upper >= result.cutoff:
            cursor.next_ts = None
        else:
            cursor.next_ts = await self.repository.oldest_expired(
                result.tenant_id, result.cutoff, upper
            )
        if cursor.next_ts is None:
            self._finish(result, purged=True)
        return deleted

    async def _account(self, result: TenantRetention, rows: int) -> None:
        """Count a batch; log progress now and then; after every `retention_batch_size` rows
        deleted, pause so that ingestion gets the database for a moment."""
        result.rows += rows
        result.batches += 1
        await self._count_batch(rows)

    async def _count_batch(self, rows: int) -> None:
        """Progress, metrics, the periodic log line and the pause, for any batch deleted."""
        self.progress.advance(rows)
        self._rows += rows
        self._batches += 1
        RETENTION_DELETED.inc(rows)
        RETENTION_BATCHES.inc()
        now = time.perf_counter()
        if now >= self._next_progress_log:
            self._next_progress_log = now + PROGRESS_LOG_SECONDS
            seconds = now - self._started
            log.info(
                "retention.progress",
                batches=self._batches,
                rows=self._rows,
                seconds=round(seconds, 3),
                rows_per_second=round(self._rows / seconds),
            )
        self._since_pause += rows
        pause = self.settings.retention_pause_seconds
        if self._since_pause >= self.settings.retention_batch_size and pause > 0:
            self._since_pause = 0
            await asyncio.sleep(pause)

    def _finish(self, result: TenantRetention, *, purged: bool = False) -> None:
        """A tenant is done: report it. `seconds` counts from the start of the run."""
        result.seconds = time.perf_counter() - self._started
        if purged:
            # One line per tenant that had anything to delete; the rest only at debug level,
            # so an hourly run over many tenants does not flood the log.
            (log.info if result.rows else log.debug)(
                "retention.tenant_done",
                tenant_id=result.tenant_id,
                cutoff=result.cutoff.isoformat(),
                batches=result.batches,
                rows=result.rows,
                seconds=round(result.seconds, 3),
            )
        if self.on_tenant is not None:
            self.on_tenant(result)


async def run_retention(
    settings: Settings,
    database_url: str,
    *,
    dry_run: bool = False,
    tenant_id: str | None = None,
    now: datetime | None = None,
    lock: bool = True,
    on_tenant: TenantCallback | None = None,
    progress: Progress = NO_PROGRESS,
) -> RetentionReport:
    """One retention run on its own connection.

    A real run first takes the retention advisory lock on that connection and keeps it to the
    end; when another process holds it, the run does nothing and reports `skipped`. A dry run
    only counts, so it takes no lock. `lock=False` is for tests of concurrent runs (row locks
    alone keep them correct: a row is deleted once, by one of them)."""
    refusal = retention_refusal(settings.retention_days, settings, "METERING_RETENTION_DAYS")
    if refusal is not None:
        raise RetentionError(refusal)
    now = now or datetime.now(UTC)
    # Closing the connection at the end also releases its advisory lock.
    async with dedicated_connection(database_url, "metering-retention") as connection:
        repository = RetentionRepository(connection)
        if lock and not dry_run and not await repository.try_lock():
            log.info("retention.skipped", reason="another process holds the retention lock")
            return RetentionReport(dry_run=dry_run, skipped=True)
        job = RetentionJob(settings, repository, now=now, on_tenant=on_tenant, progress=progress)
        report = await job.run(dry_run=dry_run, tenant_id=tenant_id)
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
