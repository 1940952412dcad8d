"""Adversarial inputs: the CLI run in-process, one line on stderr, exit 2, and nothing written.

`run_cli(argv)` calls `quantgate.cli.main` and returns (exit status, stdout, stderr lines);
`tree(root)` is a snapshot (path -> size, mtime) that a bad input must leave unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from quantgate.cli import main


@dataclass
class CliResult:
    code: int
    out: str
    err: list[str]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], CliResult]:
    def run(argv: list[str]) -> CliResult:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:  # argparse
            code = stop.code if isinstance(stop.code, int) else 2
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err.splitlines())

    return run


@pytest.fixture
def refused(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """(argv, names...) -> the one error line, after asserting exit 2, one line naming every `names`
    entry, and nothing written under the test's folder (the working directory during the call)."""
    monkeypatch.chdir(tmp_path)

    def check(argv: list[str], *names: str) -> str:
        before = tree(tmp_path)
        result = run_cli(argv)
        assert result.code == 2, (result.code, result.err[-5:])
        assert len(result.err) == 1 and result.err[0].startswith("quantgate: error: "), result.err[-5:]
        for name in names:
            assert str(name) in result.err[0], (name, result.err[0])
        assert tree(tmp_path) == before, "a refused input wrote or changed files"
        print(result.err[0])  # shown with -s: the messages side by side
        return result.err[0]

    return check


def dead_pid() -> int:
    """The id of a process that has exited (what a kill -9 leaves in a temporary folder's name)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture
def source(bundled_model: Path, tmp_path: Path) -> Path:
    """A private copy of the bundled model (files copied, so a bad write could not reach the original)."""
    copy = tmp_path / "src"
    shutil.copytree(bundled_model, copy)
    return copy
