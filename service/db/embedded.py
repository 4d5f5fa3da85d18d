"""The embedded PostgreSQL used when no DATABASE_URL is given (pgserver: a real server from a
wheel, no system install needed)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the server whose files live in data_dir/postgres; return its URL.

    The server outlives this process on purpose: several workers and CLI commands share it, and
    a restart of `make run` finds it already up. pgserver keeps it until the data dir is
    removed or the machine restarts."""
    pgdata = (data_dir / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    # pgserver warns about XDG_RUNTIME_DIR on import and prints while starting: keep the
    # command line's output to what the user asked for.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        import pgserver

        server: Any = pgserver.get_server(  # type: ignore[attr-defined]
            pgdata, cleanup_mode=None
        )
    return str(server.get_uri())
