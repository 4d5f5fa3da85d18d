"""The retention job against a real PostgreSQL: what it deletes, what it never touches, and how
concurrent runs share the work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from service.app import create_app
from service.db.url import asyncpg_dsn
from service.retention import service as retention_service
from service.retention.repository import (
    RETENTION_LOCK_KEY,
    DeletedBatch,
    RetentionRepository,
)
from service.retention.service import (
    RetentionError,
    RetentionJob,
    run_retention,
    start_retention_loop,
    stop_retention_loop,
)
from service.settings import Settings
from tests.conftest import make_settings
from tests.retention.conftest import RetentionData


def job_settings(settings: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"retention_batch_size": 64, "retention_pause_seconds": 0.0}
    values.update(overrides)
    return make_settings(settings.database_url, **values)


async def test_events_past_the_cutoff_are_deleted_and_newer_ones_stay(
    settings: Settings, data: RetentionData
) -> None:
    await data.tenant("acme")
    cutoff = data.days_ago(settings.retention_days)
    expired = await data.aged_events("acme", *(401 + i for i in range(300)))
    expired += await data.events("acme", [cutoff - timedelta(microseconds=1)])
    kept = await data.aged_events("acme", *(i * 1.9 for i in range(200)))
    kept += await data.events("acme", [cutoff])

    report = await run_retention(job_settings(settings), settings.database_url, now=data.now)

    assert report.ok and not report.skipped and not report.dry_run
    (tenant,) = report.tenants
    assert (tenant.tenant_id, tenant.retention_days, tenant.cutoff) == ("acme", 400, cutoff)
    assert tenant.rows == expired == 301
    assert tenant.batches >= 5  # 301 rows in batches of at most 64
    assert await data.count("acme") == kept
    assert await data.count("acme", before=cutoff) == 0


async def test_a_tenant_override_sets_its_own_cutoff(
    settings: Settings, data: RetentionData
) -> None:
    await data.tenant("acme")  # global 400 days
    await data.tenant("brief", retention_days=60)
    for tenant_id in ("acme", "brief"):
        await data.aged_events(tenant_id, 10, 59, 61, 90, 399, 401, 800)

    report = await run_retention(job_settings(settings), settings.database_url, now=data.now)

    by_tenant = {tenant.tenant_id: tenant for tenant in report.tenants}
    assert by_tenant["acme"].rows == 2 and by_tenant["acme"].retention_days == 400
    assert by_tenant["brief"].rows == 5 and by_tenant["brief"].retention_days == 60
    assert by_tenant["brief"].cutoff == data.days_ago(60)
    assert await data.count("acme") == 5
    assert await data.count("brief") == 2


async def test_a_dry_run_deletes_nothing_and_reports_the_count(
    settings: Settings, data: RetentionData
) -> None:
    await data.tenant("acme")
    await data.tenant("brief", retention_days=60)
    await data.aged_events("acme", 1, 500, 600)
    await data.aged_events("brief", 1, 90)
    deleted_before = _sample("metering_retention_deleted_rows_total")

    report = await run_retention(
        job_settings(settings), settings.database_url, dry_run=True, now=data.now
    )

    assert report.dry_run and report.rows == 3
    assert {t.tenant_id: t.rows for t in report.tenants} == {"acme": 2, "brief": 1}
    assert all(t.batches == 0 for t in report.tenants)
    assert await data.count() == 5
    assert _sample("metering_retention_deleted_rows_total") == deleted_before


async def test_rollups_and_invoices_are_never_touched(
    settings: Settings, data: RetentionData
) -> None:
    for tenant_id in ("acme", "brief"):
        await data.tenant(tenant_id, retention_days=None if tenant_id == "acme" else 40)
        await data.aged_events(tenant_id, *(i * 7.5 for i in range(120)))
        # Buckets both older and newer than the cutoff, for two meters.
        await data.rollups(tenant_id, 1, (i * 9.1 for i in range(100)))
        await data.rollups(tenant_id, 2, (i * 13.3 for i in range(60)))
        await data.invoice(tenant_id, "2024-01", Decimal("12.34"))
    before = await data.untouched_tables()
    assert len(before["rollup_rows"]) == 320 and len(before["invoices"]) == 2
    assert len(before["rollup totals"]) == 4

    report = await run_retention(job_settings(settings), settings.database_url, now=data.now)

    assert report.rows > 0
    assert await data.untouched_tables() == before


class RecordingRepository(RetentionRepository):
    """The real repository, noting every batch it deleted."""

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        self.batches: list[tuple[str, datetime, DeletedBatch]] = []

    async def delete_batch(
        self, tenant_id: str, cutoff: datetime, after: datetime, limit: int
    ) -> DeletedBatch:
        batch = await super().delete_batch(tenant_id, cutoff, after, limit)
        self.batches.append((tenant_id, after, batch))
        return batch


async def test_a_purge_moves_through_time_for_all_tenants_together(
    settings: Settings, data: RetentionData, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three tenants with an event every 18 hours each over two expired stretches of 300 days,
    # 300 days apart; corp has none in the oldest 200 days. Windows of about 150 events (some
    # 40 days) at this scale, as 100,000 are at a real one.
    monkeypatch.setattr(retention_service, "WINDOW_TARGET_ROWS", 150)
    tenants = ("acme", "brief", "corp")
    ages = [401 + i * 0.25 for i in range(1200)] + [1001 + i * 0.25 for i in range(1200)]
    events = {
        name: [age for i, age in enumerate(ages) if tenants[i % 3] == name] for name in tenants
    }
    events["corp"] = [age for age in events["corp"] if age <= 1100]
    for tenant_id, tenant_ages in events.items():
        await data.tenant(tenant_id)
        await data.aged_events(tenant_id, *tenant_ages)
    expired = {tenant_id: len(tenant_ages) for tenant_id, tenant_ages in events.items()}
    kept = await data.aged_events("acme", 1, 2, 3)
    batch_size = 50
    connection = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        repository = RecordingRepository(connection)
        job = RetentionJob(
            job_settings(settings, retention_batch_size=batch_size), repository, now=data.now
        )
        report = await job.run(dry_run=False)
    finally:
        await connection.close()

    assert {t.tenant_id: t.rows for t in report.tenants} == expired
    assert await data.count() == kept
    rows = [batch.rows for _, _, batch in repository.batches]
    assert max(rows) <= batch_size and sum(rows) == sum(expired.values())
    # Batch after batch, the purge goes forward in event time for all tenants together: from one
    # batch to the next it steps back at most a window (to the next tenant's start in it).
    # Tenant after tenant, it would step back over the whole backlog, some 900 days.
    starts = [after for _, after, _ in repository.batches]
    assert max(earlier - later for earlier, later in pairwise(starts)) < timedelta(days=100)
    order = [tenant_id for tenant_id, _, batch in repository.batches if batch.rows]
    assert set(order[: len(order) // 2]) == set(tenants), order


async def test_two_concurrent_runs_delete_each_row_exactly_once(
    settings: Settings, data: RetentionData
) -> None:
    expired = fresh = 0
    for tenant_id in ("acme", "brief", "corp"):
        await data.tenant(tenant_id)
        expired += await data.aged_events(tenant_id, *(401 + i / 100 for i in range(2000)))
        fresh += await data.aged_events(tenant_id, *(i for i in range(100)))
    small_batches = job_settings(settings, retention_batch_size=25)

    started = time.perf_counter()
    # lock=False: both really run at once; only PostgreSQL's row locking keeps them apart (a run
    # whose batch meets rows the other is deleting waits for that batch, then skips them).
    first, second = await asyncio.gather(
        run_retention(small_batches, settings.database_url, now=data.now, lock=False),
        run_retention(small_batches, settings.database_url, now=data.now, lock=False),
    )
    elapsed = time.perf_counter() - started

    # A row can be deleted only once, and each run counts only the rows its DELETEs removed:
    # the two counts add up to the expired rows exactly when nothing was missed or counted twice.
    assert first.rows + second.rows == expired == 6000
    for tenant_id in ("acme", "brief", "corp"):
        assert await data.count(tenant_id, before=data.days_ago(400)) == 0
    assert await data.count() == fresh
    assert elapsed < 30, f"two concurrent runs took {elapsed:.1f} s"


async def test_with_the_lock_only_one_run_works_at_a_time(
    settings: Settings, data: RetentionData
) -> None:
    await data.tenant("acme")
    expired = await data.aged_events("acme", *(401 + i / 100 for i in range(3000)))
    slow = job_settings(settings, retention_batch_size=100, retention_pause_seconds=0.01)

    reports = await asyncio.gather(
        run_retention(slow, settings.database_url, now=data.now),
        run_retention(slow, settings.database_url, now=data.now),
    )

    assert sum(report.rows for report in reports) == expired
    assert [report.skipped for report in reports].count(True) == 1
    assert await data.count("acme") == 0


async def test_a_run_skips_quietly_while_another_process_holds_the_lock(
    settings: Settings, data: RetentionData, pg_pool: asyncpg.Pool
) -> None:
    await data.tenant("acme")
    await data.aged_events("acme", 500, 501)
    async with pg_pool.acquire() as holder:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_KEY)
        try:
            report = await run_retention(job_settings(settings), settings.database_url)
            assert report.skipped and report.rows == 0 and report.tenants == []
            assert await data.count("acme") == 2
            # A dry run deletes nothing, so it needs no lock.
            dry = await run_retention(job_settings(settings), settings.database_url, dry_run=True)
            assert not dry.skipped and dry.rows == 2
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK_KEY)

    report = await run_retention(job_settings(settings), settings.database_url)
    assert not report.skipped and report.rows == 2


async def test_retention_shorter_than_the_late_arrival_window_is_refused(
    settings: Settings, data: RetentionData
) -> None:
    # The API refuses such an override; a row written around it must not delete anything.
    await data.tenant("acme")
    await data.tenant("rash", retention_days=settings.late_arrival_days - 1)
    await data.aged_events("acme", 1, 500)
    await data.aged_events("rash", 1, 40, 500)
    last_success = _sample("metering_retention_last_success_timestamp_seconds")

    report = await run_retention(job_settings(settings), settings.database_url, now=data.now)

    assert not report.ok
    by_tenant = {tenant.tenant_id: tenant for tenant in report.tenants}
    assert by_tenant["acme"].rows == 1 and by_tenant["acme"].error is None
    error = by_tenant["rash"].error
    assert error is not None and "late-arrival window" in error and "34 days" in error
    assert by_tenant["rash"].rows == 0
    assert await data.count("rash") == 3
    assert _sample("metering_retention_last_success_timestamp_seconds") == last_success

    # Settings built around Settings.validate() (which refuses this too) are refused as well.
    too_short = job_settings(settings, retention_days=10)
    with pytest.raises(RetentionError, match="METERING_RETENTION_DAYS"):
        await run_retention(too_short, settings.database_url)
    assert await data.count() == 4


async def test_one_tenant_only_and_an_unknown_tenant(
    settings: Settings, data: RetentionData
) -> None:
    for tenant_id in ("acme", "brief"):
        await data.tenant(tenant_id)
        await data.aged_events(tenant_id, 1, 500)

    report = await run_retention(job_settings(settings), settings.database_url, tenant_id="brief")

    assert [(t.tenant_id, t.rows) for t in report.tenants] == [("brief", 1)]
    assert await data.count("acme") == 2
    with pytest.raises(RetentionError, match="unknown tenant 'ghost'"):
        await run_retention(job_settings(settings), settings.database_url, tenant_id="ghost")


async def test_a_run_reports_its_metrics(settings: Settings, data: RetentionData) -> None:
    await data.tenant("acme")
    await data.aged_events("acme", *(500 + i for i in range(130)))
    deleted = _sample("metering_retention_deleted_rows_total")
    batches = _sample("metering_retention_batches_total")
    runs = _sample("metering_retention_run_duration_seconds_count")
    started = time.time()

    report = await run_retention(job_settings(settings), settings.database_url)

    assert report.batches >= 3  # 130 rows in batches of at most 64
    assert _sample("metering_retention_deleted_rows_total") == deleted + 130
    assert _sample("metering_retention_batches_total") == batches + report.batches
    assert _sample("metering_retention_run_duration_seconds_count") == runs + 1
    assert _sample("metering_retention_last_success_timestamp_seconds") >= int(started)


async def test_the_in_service_loop_runs_on_its_interval_and_stops_cleanly(
    settings: Settings, data: RetentionData
) -> None:
    await data.tenant("acme")
    await data.aged_events("acme", 500, 501, 1)
    assert start_retention_loop(job_settings(settings), settings.database_url) is None

    loop_settings = job_settings(settings, retention_interval_seconds=0.05)
    task = start_retention_loop(loop_settings, settings.database_url, first_delay=0)
    assert task is not None
    try:
        await _eventually(lambda: data.count("acme"), 1)
    finally:
        await stop_retention_loop(task)
    assert task.done()


async def test_a_failing_run_is_logged_and_the_loop_goes_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    async def failing_run(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        raise OSError("database unreachable")

    monkeypatch.setattr(retention_service, "run_retention", failing_run)
    loop_settings = job_settings(settings, retention_interval_seconds=0.01)
    task = start_retention_loop(loop_settings, settings.database_url, first_delay=0)
    assert task is not None
    try:
        for _ in range(200):
            if calls >= 3:
                break
            await asyncio.sleep(0.01)
        assert calls >= 3 and not task.done()
    finally:
        await stop_retention_loop(task)


async def test_the_app_starts_and_stops_the_loop_with_its_lifespan(settings: Settings) -> None:
    app = create_app(make_settings(settings.database_url, retention_interval_seconds=3600))
    async with app.lifespan():
        assert _retention_tasks()
    assert not _retention_tasks()


def _retention_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name() == "retention-loop" and not task.done()
    ]


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def _eventually(read: Callable[[], Any], expected: Any) -> None:
    for _ in range(500):  # up to 10 s
        if await read() == expected:
            return
        await asyncio.sleep(0.02)
    assert await read() == expected


async def _deliveries(pool: asyncpg.Pool, tenant_id: str, ages: dict[str, list[int]]) -> None:
    """Webhook messages of `tenant_id` created `ages` days before now, by status."""
    endpoint = await pool.fetchval(
        "INSERT INTO webhook_endpoints (id, url, event_types, secret) VALUES "
        "(gen_random_uuid(), 'https://hooks.example.com/x', ARRAY['invoice.finalized'], 'whsec_x')"
        " RETURNING id"
    )
    for status, days in ages.items():
        for age in days:
            await pool.execute(
                "INSERT INTO webhook_deliveries (tenant_id, id, endpoint_id, type, payload, "
                "status, attempt_count, attempts, next_attempt_at, created_at, delivered_at) "
                "VALUES ($1, gen_random_uuid(), $2, 'invoice.finalized', '{}', $3::text, 1, "
                '\'[{"at": "2026-01-01T00:00:00Z", "status_code": 500}]\', '
                "CASE WHEN $3::text = 'pending' THEN now() END, "
                "now() - make_interval(days => $4::int), "
                "CASE WHEN $3::text = 'delivered' THEN now() END)",
                tenant_id,
                endpoint,
                status,
                age,
            )


async def _statuses(pool: asyncpg.Pool) -> list[tuple[str, str, int]]:
    rows = await pool.fetch(
        "SELECT tenant_id, status, (extract(epoch FROM now() - created_at) / 86400)::int AS age "
        "FROM webhook_deliveries ORDER BY tenant_id, status, created_at"
    )
    return [(row["tenant_id"], row["status"], row["age"]) for row in rows]


async def test_old_finished_webhook_deliveries_go_and_pending_ones_stay(
    settings: Settings, data: RetentionData, pg_pool: asyncpg.Pool
) -> None:
    await data.tenant("acme")
    await data.tenant("brief")
    ages = {"delivered": [1, 29, 31, 90], "failed": [2, 45, 400], "pending": [3, 40, 500]}
    await _deliveries(pg_pool, "acme", ages)
    await _deliveries(pg_pool, "brief", {"delivered": [60], "pending": [60]})

    dry = await run_retention(
        job_settings(settings, webhook_retention_days=30),
        settings.database_url,
        dry_run=True,
    )
    assert dry.webhook_deliveries is not None and dry.webhook_deliveries.rows == 5
    assert len(await _statuses(pg_pool)) == 12

    only_brief = await run_retention(
        job_settings(settings, webhook_retention_days=30),
        settings.database_url,
        tenant_id="brief",
    )
    assert only_brief.webhook_deliveries is not None
    assert only_brief.webhook_deliveries.rows == 1

    report = await run_retention(
        job_settings(settings, webhook_retention_days=30, retention_batch_size=2),
        settings.database_url,
    )

    deliveries = report.webhook_deliveries
    assert deliveries is not None and deliveries.retention_days == 30
    assert deliveries.rows == 4 and deliveries.batches == 2  # 45, 400 failed; 31, 90 delivered
    assert await _statuses(pg_pool) == [
        ("acme", "delivered", 29),
        ("acme", "delivered", 1),
        ("acme", "failed", 2),
        ("acme", "pending", 500),
        ("acme", "pending", 40),
        ("acme", "pending", 3),
        ("brief", "pending", 60),
    ]
    # A shorter setting reaches further; pending messages stay whatever their age.
    report = await run_retention(
        job_settings(settings, webhook_retention_days=1), settings.database_url
    )
    assert report.webhook_deliveries is not None and report.webhook_deliveries.rows == 3
    assert {status for _, status, _ in await _statuses(pg_pool)} == {"pending"}


async def test_canceled_events_are_deleted_like_any_other(
    settings: Settings, data: RetentionData, pg_pool: asyncpg.Pool
) -> None:
    await data.tenant("acme")
    await data.aged_events("acme", 401, 402, 403, 10, 20)
    # A cancel marks the raw event and keeps it: retention alone removes it, by age.
    await pg_pool.execute("UPDATE events SET canceled_at = now() WHERE tenant_id = 'acme'")

    report = await run_retention(job_settings(settings), settings.database_url, now=data.now)

    assert report.rows == 3
    assert await data.count("acme") == 2
    assert await pg_pool.fetchval("SELECT count(*) FROM events WHERE canceled_at IS NULL") == 0
