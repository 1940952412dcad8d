"""Temporary folders of runs that were killed or failed, removed by the next run.

Work in progress lives under a name that ends in the writer's process id (`.NAME.tmp-PID`,
`.scratch-PID`); once that process is gone, nothing will finish it, and the next run that writes
beside it removes it. A folder of a process that still runs is left alone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_dead_temporaries(folder: Path, pattern: str, marker: str) -> list[Path]:
    """Remove entries of `folder` matching `pattern` whose name ends in `marker` + the PID of a process
    that is gone; returns what was removed."""
    removed = []
    if not folder.is_dir():
        return removed
    for stale in sorted(folder.glob(pattern)):
        pid = stale.name.rsplit(marker, 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed
