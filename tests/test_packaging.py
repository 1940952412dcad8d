"""The package as users install it: three import names, shipped suites as package data, and a built
wheel that measures the bundled model from outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _packages() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_every_package_is_listed_and_there_are_three_import_names() -> None:
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("quantgate", "quant", "harness")
        for init in (ROOT / top).rglob("__init__.py")
    }
    listed = set(_packages())
    assert listed - {"quantgate.suites"} == on_disk
    assert {name.split(".")[0] for name in listed} == {"quantgate", "quant", "harness"}


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the built wheel (not editable). Its dependencies are the test
    environment's, reached through a path entry: quantgate itself comes from the wheel alone."""
    work = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "dist")]
    subprocess.run([*build, str(ROOT)], check=True, cwd=work, capture_output=True, timeout=600)
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((work / "dist").glob("quantgate-*.whl"))
    # --ignore-installed: through the path entry the venv also sees the test environment's own
    # (editable) quantgate, and pip would call the requirement satisfied and install nothing
    install = ["install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)]
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), *install], check=True, capture_output=True, timeout=600
    )
    return env_dir


def _run(env_dir: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(env_dir / "bin" / "python"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_the_wheel_holds_three_packages_and_not_the_old_names(wheel_venv: Path, tmp_path: Path) -> None:
    python = str(wheel_venv / "bin" / "python")
    show = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "show", "-f", "quantgate"], capture_output=True, text=True
    )
    files = [line.strip() for line in show.stdout.splitlines() if line.startswith("  ")]
    top = {f.split("/")[0] for f in files if ".dist-info" not in f and not f.startswith("..")}
    assert top == {"quantgate", "quant", "harness"}, show.stdout
    for old in ("tracking", "gates", "nightly", "reporting", "tinyk2"):
        assert _run(wheel_venv, ["-c", f"import {old}"], tmp_path).returncode == 1, old
    found = _run(wheel_venv, ["-c", "import quantgate, harness; print(quantgate.__file__, harness.__file__)"], tmp_path)
    assert str(wheel_venv) in found.stdout and str(ROOT) not in found.stdout


def test_installed_wheel_evaluates_a_shipped_suite_from_outside_the_checkout(
    wheel_venv: Path, bundled_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    run = _run(
        wheel_venv,
        ["-m", "quantgate", "eval", "--model", str(bundled_model), "--suite", "perplexity", "--out", str(out)],
        tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = out / bundled_model.name / "perplexity" / "summary.json"
    assert summary.is_file()
    from quantgate.core.record import read_record

    record = read_record(summary.parent)
    assert record.metric("perplexity").value > 1 and record.suite == "perplexity"
