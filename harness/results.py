"""One result folder per (model, suite): summary.json, samples.jsonl, environment.json, timings.json.

summary.json holds what was measured and nothing about how long it took or where it ran, so the
same inputs give the same bytes (JSON with sorted keys; the latency suite's values are timings by
nature and are the exception). Timings go to timings.json, the machine to environment.json.
A folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from harness.metrics import Metric
from harness.suites.base import Measurement
from quantgate import __version__
from quantgate.provenance import git_revision

PACKAGES = ("torch", "transformers", "compressed-tensors", "safetensors", "lm-eval", "pydantic")
LAYER_SUFFIX = re.compile(r"^(?P<metric>.+)\.layer_(?P<layer>\d+)$")


def write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def by_layer(metrics: list[Metric]) -> dict[str, dict[str, float]]:
    """Metrics named `<metric>.layer_<L>` as a per-layer table: {L: {metric: value}}."""
    table: dict[str, dict[str, float]] = {}
    for metric in metrics:
        if match := LAYER_SUFFIX.match(metric.name):
            table.setdefault(match["layer"], {})[match["metric"]] = metric.value
    return dict(sorted(table.items(), key=lambda item: int(item[0])))


def summary(
    model: dict, suite: dict, measurement: Measurement, comparison: list[Metric] | None, baseline: dict | None
) -> dict:
    return {
        "model": model,
        "suite": suite,
        "baseline": baseline,
        "metrics": [m.to_json() for m in measurement.metrics],
        "comparison": None if comparison is None else [m.to_json() for m in comparison],
        "by_layer": by_layer(comparison or []),
        "details": measurement.extra,
    }


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def environment(backend_description: dict, cpu: str) -> dict:
    return {
        "backend": backend_description,
        "packages": {"quantgate": __version__} | {name: _package_version(name) for name in PACKAGES},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "git_revision": git_revision(),
    }


def staging(folder: Path) -> Path:
    """A clean temporary sibling of `folder`, where its files (and a suite's artifacts) are written first."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def write_result(folder: Path, summary_json: dict, samples: list[dict], env: dict, timings: dict) -> None:
    """Write the four files into the staging folder (made by `staging`), then swap it into place."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    write_json(tmp / "summary.json", summary_json)
    write_jsonl(tmp / "samples.jsonl", samples)
    write_json(tmp / "environment.json", env)
    write_json(tmp / "timings.json", timings)
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
