"""The embedded PostgreSQL used when no DATABASE_URL is given (pgserver: a real server from a
wheel, no system install needed). pgserver is the `embedded` extra: `make install` has it, the
production image does not (it always has a DATABASE_URL)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# `pg_ctl status` exits with 3 when no server runs in the data directory.
PG_CTL_NOT_RUNNING = 3


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL cannot be used here."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # pgserver warns about XDG_RUNTIME_DIR on import and prints while starting: keep the
    # command line's output to what the user asked for.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _pgserver() -> Any:
    try:
        with _quiet():
            import pgserver
    except ImportError as exc:
        raise EmbeddedPostgresError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed (pgserver, "
            "the `embedded` extra); set DATABASE_URL=postgresql://user:pass@host:5432/db, or "
            "install it with `pip install -e '.[embedded]'` (make install does)"
        ) from exc
    return pgserver


def pgdata_of(data_dir: Path) -> Path:
    return (data_dir / "postgres").resolve()


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the server whose files live in data_dir/postgres; return its URL.

    The server outlives this process on purpose: several workers and CLI commands share it, and
    a restart of `make run` finds it already up. It runs until `python -m service db stop`
    (make stop), or until the machine restarts."""
    pgserver = _pgserver()
    pgdata = pgdata_of(data_dir)
    pgdata.mkdir(parents=True, exist_ok=True)
    with _quiet():
        server: Any = pgserver.get_server(pgdata, cleanup_mode=None)
    return str(server.get_uri())


def stop_embedded_postgres(data_dir: Path, timeout: float = 60.0) -> bool:
    """Stop the embedded server of data_dir (fast shutdown: sessions are ended, nothing that
    was committed is lost). True when it was running, False when there was nothing to stop.

    `pg_ctl stop` itself refuses to run as root, and pgserver runs the server as the
    `pgserver` system user when started by root: run pg_ctl as that same user."""
    pgdata = pgdata_of(data_dir)
    if not (pgdata / "postmaster.pid").exists():
        return False
    pgserver = _pgserver()
    user = "pgserver" if os.name == "posix" and os.geteuid() == 0 else None
    pg_logger = logging.getLogger("pgserver")
    level = pg_logger.level
    # pgserver logs every failed pg_ctl at ERROR; "not running" is an answer, not an error.
    pg_logger.setLevel(logging.CRITICAL)
    try:
        with _quiet():
            pgserver.pg_ctl(["status"], pgdata=pgdata, user=user, timeout=timeout)
    except subprocess.CalledProcessError as exc:
        if exc.returncode == PG_CTL_NOT_RUNNING:  # a stale postmaster.pid: nothing runs
            return False
        raise EmbeddedPostgresError(f"pg_ctl status failed in {pgdata}: {exc}") from exc
    finally:
        pg_logger.setLevel(level)
    try:
        with _quiet():
            pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=timeout)
    except subprocess.CalledProcessError as exc:
        raise EmbeddedPostgresError(f"pg_ctl stop failed in {pgdata}: {exc}") from exc
    return True
