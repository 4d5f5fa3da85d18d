"""Progress bars of long commands: drawn on a terminal, absent anywhere else. The commands
themselves are run on a pseudo terminal and on pipes in tests/retention/test_retention_cli.py,
tests/operations/test_progress_commands.py."""

from __future__ import annotations

import io

from service.common.progress import NO_PROGRESS
from service.operations.progress import TerminalProgress, terminal_progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_no_progress_and_no_output() -> None:
    stream = io.StringIO()
    with terminal_progress(stream) as progress:
        assert progress is NO_PROGRESS and not progress.wants_total
        progress.start("deleting", 10)
        progress.advance(10)
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_bar_per_stage() -> None:
    stream = FakeTerminal()
    with terminal_progress(stream) as progress:
        assert isinstance(progress, TerminalProgress) and progress.wants_total
        progress.start("rebuilding (steps)", 5)
        for _ in range(5):
            progress.advance()
        progress.start("folding (rows)", None)  # size unknown: complete at what it did
        progress.advance(1234)
    screen = stream.getvalue()
    assert "rebuilding (steps)" in screen and "5/5" in screen
    assert "folding (rows)" in screen and "1234/1234" in screen
