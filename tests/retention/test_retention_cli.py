"""`python -m service retention run`, run as the CronJob runs it: a subprocess with DATABASE_URL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg

from service.paths import PROJECT_ROOT
from service.retention.repository import RETENTION_LOCK_KEY
from tests.retention.conftest import RetentionData
from tests.support.terminal import run_in_terminal


def retention_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "METERING_SECRET_KEY": "test-secret-key",
        "METERING_RETENTION_BATCH_SIZE": "2",
        "METERING_RETENTION_PAUSE_SECONDS": "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "service", "retention", "run", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_dry_run_prints_what_would_be_deleted_and_deletes_nothing(
    database_url: str, data: RetentionData
) -> None:
    await data.tenant("acme")
    await data.tenant("brief", retention_days=60)
    await data.aged_events("acme", 1, 401, 402, 403)
    await data.aged_events("brief", 1, 90)

    result = retention_cli("--dry-run", database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert "acme: retention 400 days" in result.stdout
    assert "would delete 3 events" in result.stdout
    assert "brief: retention 60 days" in result.stdout
    assert "would delete 1 events" in result.stdout
    assert "Dry run: would delete 4 raw events of 2 tenant(s)" in result.stdout
    assert await data.count() == 6


async def test_run_for_one_tenant_deletes_its_expired_events(
    database_url: str, data: RetentionData
) -> None:
    for tenant_id in ("acme", "brief"):
        await data.tenant(tenant_id)
        await data.aged_events(tenant_id, 1, 401, 402, 403, 404, 405)

    result = retention_cli("--tenant", "acme", database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert "acme: retention 400 days" in result.stdout
    assert "deleted 5 events in 3 batches" in result.stdout
    assert "Deleted 5 raw events of 1 tenant(s)" in result.stdout
    assert await data.count("acme") == 1
    assert await data.count("brief") == 6


def test_an_unknown_tenant_is_a_clear_error(database_url: str) -> None:
    result = retention_cli("--tenant", "ghost", database_url=database_url)

    assert result.returncode != 0
    assert "unknown tenant 'ghost'" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_refused_tenant_fails_the_run_after_the_others_are_done(
    database_url: str, data: RetentionData
) -> None:
    await data.tenant("acme")
    await data.tenant("rash", retention_days=7)
    await data.aged_events("acme", 1, 500)
    await data.aged_events("rash", 1, 500)

    result = retention_cli(database_url=database_url)

    assert result.returncode == 1
    assert "rash: retention 7 days" in result.stdout and "REFUSED" in result.stdout
    assert "late-arrival window" in result.stdout
    assert "retention refused for 1 tenant(s)" in result.stderr
    assert "Traceback" not in result.stderr
    assert await data.count("acme") == 1
    assert await data.count("rash") == 2


async def test_a_run_while_another_holds_the_lock_says_so_and_succeeds(
    database_url: str, data: RetentionData, pg_pool: asyncpg.Pool
) -> None:
    await data.tenant("acme")
    await data.aged_events("acme", 500)
    async with pg_pool.acquire() as holder:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_KEY)
        try:
            result = retention_cli(database_url=database_url)
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK_KEY)

    assert result.returncode == 0, result.stderr
    assert "Another process holds the retention lock" in result.stdout
    assert await data.count("acme") == 1


def test_a_database_that_does_not_answer_is_a_clear_error() -> None:
    result = retention_cli(database_url="postgresql://nobody@127.0.0.1:9/none")

    assert result.returncode != 0
    assert "retention run failed" in result.stderr
    assert "Traceback" not in result.stderr


# Bar glyphs and cursor codes rich draws; none may reach a log or a pipe.
BAR_MARKS = ("━", "\x1b[?25l", "\r")


async def test_a_terminal_shows_a_progress_bar(database_url: str, data: RetentionData) -> None:
    await data.tenant("acme")
    await data.aged_events("acme", 401, 402, 403, 404, 405, 1)

    run = await asyncio.to_thread(
        run_in_terminal,
        "retention",
        "run",
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "METERING_SECRET_KEY": "test-secret-key",
            "METERING_RETENTION_BATCH_SIZE": "2",
            "METERING_RETENTION_PAUSE_SECONDS": "0",
        },
    )

    assert run.returncode == 0, run.screen
    assert "deleting expired events" in run.screen and "5/5" in run.screen
    assert "━" in run.screen
    assert "Deleted 5 raw events of 1 tenant(s)" in run.screen
    assert "deleted 0 delivered or failed messages (pending ones are kept)" in run.screen
    assert await data.count("acme") == 1


async def test_logs_and_pipes_get_no_progress_bar(database_url: str, data: RetentionData) -> None:
    await data.tenant("acme")
    await data.aged_events("acme", 401, 402, 403, 1)

    for args in (["--dry-run"], []):
        result = retention_cli(*args, database_url=database_url)
        assert result.returncode == 0, result.stderr
        for mark in BAR_MARKS:
            assert mark not in result.stdout and mark not in result.stderr, (mark, result)
        # stderr holds the JSON log lines and nothing else.
        assert all(line.startswith("{") for line in result.stderr.splitlines()), result.stderr
