"""The baseline's measurements, cached on disk under a key of every input that can change them.

Key: the checkpoint's identity (quantgate.core.checkpoint.checkpoint_identity: its manifest and
every other file, or every file when it has no manifest: weights, config, tokenizer, chat template,
generation config), the suite's resolved config with each data file replaced by its sha256 and the
sha256 of every other file the suite reads (lm-eval task YAMLs and their data), the backend's
numerical settings (backend, device, dtype, threads) and the CPU, and CACHE_VERSION (bumped when a
suite's artifacts or the key's inputs change). An entry is a folder
`<kind>-<key>` holding the baseline's result record (quantgate.core.record, without comparison),
`key.json` (the key's inputs), `samples.jsonl` and the suite's artifacts; it is
written under a temporary name and renamed into place, so a killed run leaves no half entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from collections.abc import Callable
from pathlib import Path

from harness.result_folder import result_record, write_json, write_jsonl
from harness.suites.base import Measurement, SuiteConfig, suite_kind
from quantgate.core.checkpoint import sha256_file
from quantgate.core.leftovers import remove_dead_temporaries
from quantgate.core.record import RESULT_FILE, SAMPLES_FILE, ModelRef, read_record, write_record

# 3: the key covers a suite's other input files (lm-eval task YAMLs and data) and every checkpoint file
# 4: benchmark rows carry continuous per-item measures; toolcall baselines keep their call steps
CACHE_VERSION = 4
KEY_INPUTS = "key.json"
NUMERICAL_SETTINGS = ("backend", "device", "dtype", "threads")


def config_identity(config: SuiteConfig) -> dict:
    """The resolved config as JSON with each file path replaced by the file's sha256, plus the sha256
    of every other file the suite kind reads (`SuiteKind.inputs`)."""
    resolved = config.model_dump(mode="json")
    for field in type(config).model_fields:
        value = getattr(config, field)
        if isinstance(value, Path):
            resolved[field] = {"sha256": sha256_file(value)}
    kind = suite_kind(config.kind)
    if kind.inputs is not None:
        resolved["input_files"] = kind.inputs(config)
    return resolved


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cache_key(model_identity: str, config: SuiteConfig, backend_description: dict) -> tuple[str, dict]:
    inputs = {
        "cache_version": CACHE_VERSION,
        "model": model_identity,
        "suite": config_identity(config),
        "backend": {k: backend_description.get(k) for k in NUMERICAL_SETTINGS},
        "cpu": cpu_name(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24], inputs


class BaselineCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def entry(self, config: SuiteConfig, key: str) -> Path:
        return self.root / f"{config.kind}-{key}"

    def load(self, config: SuiteConfig, key: str) -> Measurement | None:
        entry = self.entry(config, key)
        if not (entry / RESULT_FILE).is_file():
            return None
        record = read_record(entry)
        samples = [json.loads(line) for line in (entry / SAMPLES_FILE).read_text().splitlines() if line]
        return Measurement(record.metrics, samples, entry, record.details)

    def store(
        self, config: SuiteConfig, key: str, inputs: dict, model: ModelRef, measure: Callable[[Path], Measurement]
    ) -> Measurement:
        """Run `measure(tmp_dir)` and move its folder into place as the entry for `key`."""
        final = self.entry(config, key)
        tmp = self.root / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        remove_dead_temporaries(self.root, ".*.tmp-*", ".tmp-")  # entries of killed runs
        tmp.mkdir(parents=True)
        try:
            measurement = measure(tmp)
            write_json(tmp / KEY_INPUTS, inputs)
            write_record(tmp, result_record(model, config.model_dump(mode="json"), measurement, None, None))
            write_jsonl(tmp / SAMPLES_FILE, measurement.samples)
        except BaseException:  # a failed measurement leaves no temporary entry
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():  # another run finished the same entry first; it is equivalent
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
        return self.load(config, key)  # type: ignore[return-value]
