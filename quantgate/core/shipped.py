"""The shipped suites, their data and lm-eval task YAMLs: the package data `quantgate.suites`.

In the repository they are the top-level `suites/` folder; installed, they sit inside the package.
Paths written `suites/...` in a suite file, a suite config's default or a calibration source name
that folder wherever quantgate is installed, so shipped configs never depend on the working
directory or on a checkout.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SHIPPED_PREFIX = "suites"


def shipped_root() -> Path:
    """The folder holding the shipped suite YAMLs (installed as files, never zipped)."""
    return Path(str(files("quantgate.suites")))


def shipped_suite_names() -> list[str]:
    return sorted(path.stem for path in shipped_root().glob("*.yaml"))


def resolve_data_path(path: str | Path, *bases: Path) -> list[Path]:
    """Where a relative data path may be, in order: under each base, then (for `suites/...`) in the
    shipped suites. An absolute path is itself."""
    path = Path(path)
    if path.is_absolute():
        return [path]
    candidates = [base / path for base in bases]
    if path.parts[:1] == (SHIPPED_PREFIX,):
        candidates.append(shipped_root().joinpath(*path.parts[1:]))
    return candidates
