"""`rollups rebuild` and `prices import-llm` draw progress bars on a terminal and print
exactly their report lines anywhere else (retention: tests/retention/test_retention_cli.py)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.support.terminal import run_in_terminal
from tests.test_cli import run_cli

BAR_MARKS = ("━", "\x1b[?25l", "\r")


def environment(database_url: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "METERING_SECRET_KEY": "test-secret-key"}


@pytest.fixture
async def acme(pg_pool: asyncpg.Pool) -> None:
    await pg_pool.execute(
        "INSERT INTO tenants (id, name, currency, timezone) VALUES ('acme', 'Acme', 'USD', 'UTC')"
    )


def rebuild_args() -> list[str]:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=2)
    return [
        "rollups",
        "rebuild",
        "--tenant",
        "acme",
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
    ]


async def test_rebuild_on_a_terminal(database_url: str, acme: None) -> None:
    run = await asyncio.to_thread(run_in_terminal, *rebuild_args(), env=environment(database_url))
    assert run.returncode == 0, run.screen
    assert "rebuilding rollups from raw events (steps)" in run.screen and "5/5" in run.screen
    assert "folding into the hour to month levels" in run.screen
    assert "Rebuilt rollups of acme" in run.screen


async def test_rebuild_in_a_pipe(database_url: str, acme: None) -> None:
    result = await asyncio.to_thread(run_cli, *rebuild_args(), database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Rebuilt rollups of acme")
    for mark in BAR_MARKS:
        assert mark not in result.stdout + result.stderr


async def test_price_import_on_a_terminal_and_in_a_pipe(database_url: str) -> None:
    preset = await asyncio.to_thread(run_cli, "meters", "preset-llm", database_url=database_url)
    assert preset.returncode == 0, preset.stderr
    args = ["prices", "import-llm", "--model", "gpt-4o", "--model", "no-such-model"]
    run = await asyncio.to_thread(run_in_terminal, *args, env=environment(database_url))
    assert run.returncode == 0, run.screen
    assert "importing LLM prices (models)" in run.screen and "2/2" in run.screen
    assert "not found no-such-model" in run.screen
    # Again, in a pipe: the same models now conflict, and nothing but the lines is printed.
    result = await asyncio.to_thread(run_cli, *args, database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "not found no-such-model"
    assert all(line.startswith(("conflict", "not found")) for line in result.stdout.splitlines())
    for mark in BAR_MARKS:
        assert mark not in result.stdout + result.stderr
