"""The command line, run as a user would: a subprocess with DATABASE_URL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.paths import PROJECT_ROOT
from service.settings import DEV_SECRET


def run_cli(
    *args: str, database_url: str | None, **variables: str
) -> subprocess.CompletedProcess[str]:
    """`python -m service ARGS` in a subprocess; database_url None means no DATABASE_URL at all
    (the embedded PostgreSQL under METERING_DATA_DIR)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"METERING_SECRET_KEY": "test-secret-key", **variables}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_keys_create_prints_the_key_alone_on_the_last_line(
    client: AsyncTestClient[Litestar], database_url: str
) -> None:
    result = run_cli(
        "keys", "create", "--scope", "admin", "--name", "bootstrap", database_url=database_url
    )
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("mk_") and " " not in key
    response = await client.get("/v1/tenants", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200


def test_keys_create_refuses_unknown_tenant(database_url: str) -> None:
    result = run_cli(
        "keys",
        "create",
        "--scope",
        "read",
        "--name",
        "x",
        "--tenant",
        "ghost",
        database_url=database_url,
    )
    assert result.returncode != 0
    assert "ghost" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_is_idempotent(database_url: str) -> None:
    result = run_cli("migrate", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "head" in result.stderr


def test_serve_banner_names_the_running_interpreter(database_url: str) -> None:
    """`python -m service keys create` fails with a system Python that lacks the service's
    dependencies: the banner names the interpreter that is serving, as `make run` does."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "METERING_SECRET_KEY": "test-secret-key",
        "METERING_WORKERS": "1",
        "METERING_RETENTION_INTERVAL_SECONDS": "0",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stderr is not None
        banner = ""
        deadline = time.monotonic() + 60
        while "First admin key" not in banner and time.monotonic() < deadline:
            line = server.stderr.readline()
            if not line:
                break
            banner += line
    finally:
        server.terminate()
        server.wait(timeout=30)
    expected = f"{sys.executable} -m service keys create --scope admin --name bootstrap"
    assert expected in banner, banner


@pytest.mark.parametrize(
    "secret", [DEV_SECRET, "REPLACE_ME_with_a_long_random_value", "compose-dev-secret-change-me"]
)
@pytest.mark.parametrize(
    "command", [["serve"], ["keys", "create", "--scope", "admin", "--name", "x"]]
)
def test_production_refuses_a_default_or_placeholder_secret(
    database_url: str, secret: str, command: list[str]
) -> None:
    result = run_cli(*command, database_url=database_url, METERING_SECRET_KEY=secret)
    assert result.returncode != 0
    assert "METERING_SECRET_KEY" in result.stderr
    assert "secrets.token_urlsafe(32)" in result.stderr
    assert "Traceback" not in result.stderr


def test_development_accepts_the_default_secret_with_a_warning(database_url: str) -> None:
    result = run_cli(
        "keys",
        "create",
        "--scope",
        "read",
        "--name",
        "dev",
        database_url=database_url,
        METERING_SECRET_KEY=DEV_SECRET,
        METERING_ENV="development",
    )
    assert result.returncode == 0, result.stderr
    assert "Warning: METERING_SECRET_KEY is a default" in result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("mk_")


def test_db_stop_stops_the_embedded_postgres(tmp_path: Path) -> None:
    """`make stop` / `python -m service db stop`: the embedded server outlives every command
    (on purpose), and `pg_ctl stop` by hand refuses to run as root; this stops it."""
    data_dir = tmp_path / "data"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, database_url=None, METERING_DATA_DIR=str(data_dir))

    try:
        started = cli("migrate")  # starts the embedded server, which stays up
        if started.returncode != 0 and "pgserver" in started.stderr:
            pytest.skip(f"embedded PostgreSQL cannot start here: {started.stderr[-300:]}")
        assert started.returncode == 0, started.stderr
        pid_file = data_dir / "postgres" / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0])
        assert _alive(postmaster)

        stopped = cli("db", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "Stopped the embedded PostgreSQL" in stopped.stdout
        assert not pid_file.exists()
        deadline = time.monotonic() + 10
        while _alive(postmaster) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(postmaster)

        again = cli("db", "stop")
        assert again.returncode == 0, again.stderr
        assert "No embedded PostgreSQL is running" in again.stdout
    finally:
        from service.db.embedded import stop_embedded_postgres

        stop_embedded_postgres(data_dir)


def test_db_stop_refuses_a_database_url(database_url: str) -> None:
    result = run_cli("db", "stop", database_url=database_url)
    assert result.returncode != 0
    assert "DATABASE_URL is set" in result.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers signal 0.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))
