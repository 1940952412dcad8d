"""Where a suite's data files are, and whether a suite entry is a name or a path.

A relative data path resolves against the working directory, then (`suites/...`) the shipped suites
(quantgate.core.shipped), so shipped suites work from an installed wheel and any directory.
"""

from __future__ import annotations

from pathlib import Path

from quantgate.core.shipped import resolve_data_path


def suite_data_path(path: str | Path) -> Path:
    candidates = resolve_data_path(path, Path.cwd())
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        raise FileNotFoundError(f"suite data {path} not found ({' or '.join(str(c) for c in candidates)})")
    return found


def is_suite_file(entry: str) -> bool:
    """A suite given as a path (it has a "/" or a YAML suffix) rather than a shipped suite's name."""
    return "/" in entry or entry.endswith((".yaml", ".yml"))


def suite_entry_name(entry: str) -> str:
    """The suite's name for a plan or --suite entry: a bare name as it is, a path by its file stem."""
    return Path(entry).stem if is_suite_file(entry) else entry
