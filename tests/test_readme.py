"""The README's examples run as written: its ```bash and ```sh blocks, in order, in one bash,
against a real server (`python -m service serve` on a free port) and an empty database, with
`set -euo pipefail`, so the first failing command (curl -f: any HTTP error) fails the test.

Commands that are not part of the tour (make run, installs, Kubernetes) are fenced ```console
in the README and are not run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.paths import PROJECT_ROOT
from tests.conftest import TEST_SECRET
from tests.support.live_server import live_server, service_environment

README = PROJECT_ROOT / "README.md"
RUNNABLE_FENCES = ("bash", "sh")
FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    code: str


def shell_blocks(markdown: str) -> list[Block]:
    blocks: list[Block] = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if opening.group(1) in RUNNABLE_FENCES:
            blocks.append(Block(line=index + 1, code="\n".join(lines[index + 1 : end])))
        index = end + 1
    return blocks


def tour_script(blocks: list[Block]) -> str:
    """One script: each block announced on stderr, so a failure names its block."""
    parts = [
        "set -euo pipefail",
        "trap 'echo \"README tour failed at script line $LINENO: $BASH_COMMAND\" >&2' ERR",
    ]
    for block in blocks:
        parts.append(f"echo '--- README.md line {block.line}' >&2")
        parts.append(block.code)
    parts.append("echo '--- README tour done' >&2")
    return "\n".join(parts) + "\n"


def test_the_readme_has_a_tour() -> None:
    blocks = shell_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 8, "the README lost its runnable examples (```bash blocks)"


@pytest.mark.parametrize(
    "block", shell_blocks(README.read_text(encoding="utf-8")), ids=lambda block: str(block.line)
)
def test_readme_examples_fail_loudly(block: Block) -> None:
    """Every curl of the tour fails on an HTTP error and talks to $BASE, not a fixed port."""
    for curl in re.findall(r"\bcurl\b[^\n]*", block.code):
        assert re.search(r"\s-[a-zA-Z]*f", curl), f"README.md:{block.line}: curl without -f: {curl}"
    addresses = re.sub(r"(?m)^BASE=\$\{BASE:-.*$", "", block.code)  # its one default
    assert not re.search(r"localhost:|127\.0\.0\.1:", addresses), (
        f"README.md:{block.line}: use $BASE, not a fixed address"
    )


def test_readme_tour_runs_against_a_live_server(database_url: str, tmp_path: Path) -> None:
    missing = [tool for tool in ("bash", "curl", "python3") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the README tour needs {', '.join(missing)} on PATH")
    blocks = shell_blocks(README.read_text(encoding="utf-8"))
    env = service_environment(database_url, TEST_SECRET)
    # The README runs `.venv/bin/python` from the checkout; in a scratch directory (the tour
    # writes a CSV there), that name leads to the interpreter running these tests.
    venv_python = tmp_path / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    venv_python.chmod(0o755)
    script = tmp_path / "readme_tour.sh"
    script.write_text(tour_script(blocks), encoding="utf-8")
    with live_server(env) as base:
        result = subprocess.run(
            ["bash", str(script)],
            cwd=tmp_path,
            env={**env, "BASE": base},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, (
        f"the README tour failed (exit {result.returncode})\n"
        f"--- stdout (tail)\n{result.stdout[-1500:]}\n--- stderr (tail)\n{result.stderr[-4000:]}"
    )
    assert "--- README tour done" in result.stderr
    csv_files = list(tmp_path.glob("*.csv"))
    assert csv_files, "the invoice CSV example wrote no file"
    assert csv_files[0].read_text(encoding="utf-8").strip(), "the invoice CSV is empty"
