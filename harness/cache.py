"""The baseline's measurements, cached on disk under a key of every input that can change them.

Key: the checkpoint's identity (sha256 of its `quantgate.json`, or of its config, index and
safetensors shards when it has no manifest), the suite's resolved config with each data file
replaced by its sha256, the backend's numerical settings (backend, device, dtype, threads) and the
CPU, and CACHE_VERSION (bumped when a suite's artifacts change format). An entry is a folder
`<kind>-<key>` holding `measurement.json`, `samples.jsonl` and the suite's artifacts; it is
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

from harness.metrics import Metric
from harness.results import write_json, write_jsonl
from harness.suites.base import Measurement, SuiteConfig
from quant.manifest import MANIFEST_NAME
from quant.source import sha256_file

CACHE_VERSION = 1
MEASUREMENT = "measurement.json"
SAMPLES = "samples.jsonl"
NUMERICAL_SETTINGS = ("backend", "device", "dtype", "threads")


def checkpoint_identity(model_dir: Path) -> str:
    """sha256 of the manifest (it lists every file's sha256), else of config, index and shards."""
    if (model_dir / MANIFEST_NAME).is_file():
        return "manifest:" + sha256_file(model_dir / MANIFEST_NAME)
    digest = hashlib.sha256()
    for path in (
        sorted(model_dir.glob("*.safetensors"))
        + [model_dir / "config.json"]
        + sorted(model_dir.glob("*.safetensors.index.json"))
    ):
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return "files:" + digest.hexdigest()


def config_identity(config: SuiteConfig) -> dict:
    """The resolved config as JSON with each file path replaced by the file's sha256."""
    resolved = config.model_dump(mode="json")
    for field in type(config).model_fields:
        value = getattr(config, field)
        if isinstance(value, Path):
            resolved[field] = {"sha256": sha256_file(value)}
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
        if not (entry / MEASUREMENT).is_file():
            return None
        saved = json.loads((entry / MEASUREMENT).read_text())
        samples = [json.loads(line) for line in (entry / SAMPLES).read_text().splitlines() if line]
        return Measurement([Metric(**m) for m in saved["metrics"]], samples, entry, saved["extra"])

    def store(
        self, config: SuiteConfig, key: str, inputs: dict, measure: Callable[[Path], Measurement]
    ) -> Measurement:
        """Run `measure(tmp_dir)` and move its folder into place as the entry for `key`."""
        final = self.entry(config, key)
        tmp = self.root / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        measurement = measure(tmp)
        write_json(
            tmp / MEASUREMENT,
            {
                "key_inputs": inputs,
                "metrics": [m.to_json() for m in measurement.metrics],
                "extra": measurement.extra,
            },
        )
        write_jsonl(tmp / SAMPLES, measurement.samples)
        if final.exists():  # another run finished the same entry first; it is equivalent
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
        return self.load(config, key)  # type: ignore[return-value]
