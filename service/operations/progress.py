"""Progress bars for long commands, drawn with rich on a terminal and nowhere else.

A command wraps its job in `terminal_progress()`: on a terminal (stderr is a TTY) each stage
of the job is a bar with its count, rate and time left; otherwise (logs, a CronJob, a pipe)
the job gets `NO_PROGRESS` and the output stays exactly what it was."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

from service.common.progress import NO_PROGRESS, Progress


class TerminalProgress:
    """Each stage a bar of its own; a finished stage's bar stays on screen, complete."""

    wants_total = True

    def __init__(self, bars: RichProgress) -> None:
        self._bars = bars
        self._task: TaskID | None = None

    def start(self, description: str, total: int | None) -> None:
        self.finish()
        self._task = self._bars.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._bars.advance(self._task, amount)

    def finish(self) -> None:
        """The current stage is over: its bar shows complete (a stage of unknown size, or
        one that did less than its total, ends at what it did)."""
        if self._task is None:
            return
        task = next(task for task in self._bars.tasks if task.id == self._task)
        self._bars.update(self._task, total=task.completed, completed=task.completed)
        self._task = None


@contextmanager
def terminal_progress(stream: IO[str] | None = None) -> Iterator[Progress]:
    """Progress bars on `stream` (default stderr) when it is a terminal, else NO_PROGRESS."""
    stream = stream if stream is not None else sys.stderr
    if not stream.isatty():
        yield NO_PROGRESS
        return
    bars = RichProgress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=stream),
        # What the command prints on stdout goes above the bars when stdout is the same
        # terminal; redirected to a file, it must stay in the file (rich would send it to
        # the bars' console, stderr).
        redirect_stdout=sys.stdout.isatty(),
    )
    progress = TerminalProgress(bars)
    with bars:
        try:
            yield progress
        finally:
            progress.finish()
