"""How long jobs (rollup rebuilds, retention, price imports) tell a watcher how far they are.

Jobs take a `Progress` and call it; they never know who watches. The command line passes a
progress bar when a person watches on a terminal (service.operations.progress) and
`NO_PROGRESS` otherwise: in logs, a CronJob or a pipe, bars would only be noise (the jobs'
own log lines say what happened)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    # Whether a total is worth an extra query to count it (a person watching a bar).
    wants_total: bool

    def start(self, description: str, total: int | None) -> None:
        """Begin a stage of the job: `total` units of work, None when not known."""

    def advance(self, amount: int = 1) -> None:
        """`amount` more units of the current stage are done."""


class NoProgress:
    """Nobody watches: every call does nothing."""

    wants_total = False

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


NO_PROGRESS: Progress = NoProgress()
