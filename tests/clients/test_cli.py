"""`metering report …` (the client's console command) against a real server."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from metering_client import Tracker
from metering_client.cli import main
from tests.clients.conftest import Setup


@pytest.fixture
def reported(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """7 + 3 calls by two users yesterday; METERING_URL and METERING_API_KEY set."""
    yesterday = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    yesterday -= timedelta(days=1)
    with Tracker(setup.base_url, setup.ingest_key, tenant_id="acme") as tracker:
        for value, user in ((2, "ann"), (3, "bob"), (5, "ann")):
            tracker.record("api_calls", value, user_id=user, timestamp=yesterday)
    monkeypatch.setenv("METERING_URL", setup.base_url)
    monkeypatch.setenv("METERING_API_KEY", setup.read_key)
    start = yesterday.replace(hour=0)
    return start.isoformat(), (start + timedelta(days=1)).isoformat()


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out), out.getvalue()


def test_usage_as_a_table_csv_and_json(reported: tuple[str, str]) -> None:
    start, end = reported
    common = ("report", "usage", "--tenant", "acme", "--from", start, "--to", end)
    code, table = run(*common, "--meter", "api_calls", "--group-by", "user_id")
    assert code == 0
    lines = table.splitlines()
    assert lines[0].split() == ["window_start", "window_end", "user_id", "value"]
    assert sorted(line.split()[-2:] for line in lines[2:]) == [["ann", "7"], ["bob", "3"]]
    code, text = run(*common, "--meter", "api_calls", "--filter", "user_id:bob", "--format", "csv")
    assert code == 0 and text.splitlines()[1].endswith(",3")
    code, text = run(*common, "--format", "json")
    assert code == 0
    meters = {meter["meter"]: meter for meter in json.loads(text)["meters"]}
    assert meters["api_calls"]["rows"][0]["value"] == "10"


def test_errors_name_the_fields_and_exit_1(
    reported: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    start, end = reported
    code, _ = run("report", "usage", "--tenant", "acme", "--from", end, "--to", start)
    assert code == 1
    assert "validation_error" in capsys.readouterr().err


def test_without_url_and_key_it_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("METERING_URL", raising=False)
    assert run("report", "llm", "--tenant", "acme", "--period", "7d")[0] == 2
    assert "METERING_URL" in capsys.readouterr().err


def test_the_console_command_is_installed() -> None:
    command = Path(sys.executable).parent / "metering"
    answer = subprocess.run(
        [str(command), "report", "--help"], capture_output=True, text=True, check=False
    )
    assert answer.returncode == 0 and "usage" in answer.stdout
