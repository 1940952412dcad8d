"""The import layers hold (pyproject.toml [tool.importlinter]): the app above quant and harness, quant
and harness independent of each other, both above quantgate.core; and a reverse import breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300)


def test_layers_are_kept() -> None:
    run = _lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 kept, 0 broken" in run.stdout


def test_a_reverse_import_breaks_the_contract(tmp_path: Path) -> None:
    copy = tmp_path / "tree"
    for name in ("quantgate", "quant", "harness"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    with (copy / "quant" / "select.py").open("a") as module:
        module.write("\nfrom harness.kl import perplexity  # noqa: E402,F401  (quant must not import harness)\n")
    run = _lint_imports(copy)
    assert run.returncode == 1
    assert "quant.select -> harness.kl" in run.stdout
