"""Where a suite's data files are: a relative path in a suite config is relative to the project root."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # holds suites/


def suite_data_path(path: str | Path) -> Path:
    resolved = Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path
    if not resolved.exists():
        raise FileNotFoundError(
            f"suite data {path} not found (relative paths are relative to {PROJECT_ROOT})"
        )
    return resolved


def is_suite_file(entry: str) -> bool:
    """A suite given as a path (it has a "/" or a YAML suffix) rather than a shipped suite's name."""
    return "/" in entry or entry.endswith((".yaml", ".yml"))


def suite_entry_name(entry: str) -> str:
    """The suite's name for a plan or --suite entry: a bare name as it is, a path by its file stem."""
    return Path(entry).stem if is_suite_file(entry) else entry
