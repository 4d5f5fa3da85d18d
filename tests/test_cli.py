"""The command line, run as a user would: a subprocess with DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys

from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.paths import PROJECT_ROOT


def run_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "METERING_SECRET_KEY": "test-secret-key"}
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
