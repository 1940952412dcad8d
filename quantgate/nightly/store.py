"""Finished (checkpoint, suite) results on local disk, keyed by everything that decides them.

A pair's key is the sha256 of: the checkpoint's identity (its manifest's hash, or its files' for a
BF16 model), the baseline's identity, the suite's cache key (the resolved suite config with each
data file's hash, backend settings, CPU) and the quantgate version. Its folder is
`state/results/<checkpoint>/<suite>/<key>/` and holds what `quantgate eval` writes (summary.json,
samples.jsonl, environment.json, timings.json). A folder is moved into place in one rename once it
is complete, so a killed nightly leaves either a finished pair or nothing; a rerun (or the next
nightly with nothing changed) finds finished pairs by key and does not measure them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from harness.cache import cache_key
from harness.suites.base import SuiteConfig
from quantgate import __version__
from quantgate.core.leftovers import remove_dead_temporaries
from quantgate.core.record import RESULT_FILE


def pair_key(identity: str, baseline_identity: str, config: SuiteConfig, settings: dict) -> str:
    suite_key, _ = cache_key(identity, config, settings)
    inputs = {
        "checkpoint": identity,
        "baseline": baseline_identity,
        "suite": suite_key,
        "quantgate": __version__,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, checkpoint: str, suite: str, key: str) -> Path:
        return self.root / checkpoint / suite / key

    def finished(self, folder: Path) -> bool:
        return (folder / RESULT_FILE).is_file()

    def adopt(self, written: Path, folder: Path) -> None:
        """Move a complete result folder into place (one rename; same filesystem)."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        if self.finished(folder):  # measured meanwhile by another process: equivalent
            shutil.rmtree(written)
            return
        os.rename(written, folder)

    def scratch(self) -> Path:
        """A fresh folder on the store's filesystem for `quantgate eval` to write into."""
        path = self.root / f".scratch-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        remove_dead_temporaries(self.root, ".scratch-*", ".scratch-")  # of killed nightlies
        path.mkdir(parents=True)
        return path
