"""One result folder per (model, suite): the result record (quantgate.core.record, summary.json),
samples.jsonl, environment.json, timings.json.

The record holds what was measured and nothing about how long it took or where it ran, so the
same inputs give the same bytes (JSON with sorted keys; the latency suite's values are timings by
nature and are the exception). Timings go to timings.json, the machine to environment.json.
A folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from harness.suites.base import Measurement
from quantgate import __version__
from quantgate.core.metrics import Metric, layer_table
from quantgate.core.provenance import git_revision
from quantgate.core.record import ENVIRONMENT_FILE, SAMPLES_FILE, TIMINGS_FILE, ModelRef, ResultRecord, write_record

PACKAGES = ("torch", "transformers", "compressed-tensors", "safetensors", "lm-eval", "pydantic")


def write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def result_record(
    model: ModelRef, suite: dict, measurement: Measurement, comparison: list[Metric] | None, baseline: ModelRef | None
) -> ResultRecord:
    return ResultRecord(
        model=model,
        suite=suite,
        baseline=baseline,
        metrics=measurement.metrics,
        comparison=comparison,
        by_layer=layer_table(comparison or []),
        details=measurement.extra,
    )


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


def write_result(folder: Path, record: ResultRecord, samples: list[dict], env: dict, timings: dict) -> None:
    """Write the four files into the staging folder (made by `staging`), then swap it into place."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    write_record(tmp, record)
    write_jsonl(tmp / SAMPLES_FILE, samples)
    write_json(tmp / ENVIRONMENT_FILE, env)
    write_json(tmp / TIMINGS_FILE, timings)
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
