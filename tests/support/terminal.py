"""Run `python -m service …` as a person at a terminal would: stdout and stderr on a pseudo
terminal (so `isatty()` is true in the command), everything it draws captured."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from dataclasses import dataclass

from service.paths import PROJECT_ROOT


@dataclass(frozen=True)
class TerminalRun:
    returncode: int
    screen: str  # every byte written to the terminal, escape codes included


def run_in_terminal(*args: str, env: dict[str, str], timeout: float = 120) -> TerminalRun:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        cwd=PROJECT_ROOT,
        env={"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", **env},
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    return TerminalRun(returncode, b"".join(chunks).decode("utf-8", "replace"))
