"""One evaluated (checkpoint, suite) pair as Python objects, read from the harness's result folders.

A result folder is RESULTS/<checkpoint folder name>/<suite name>/ and holds summary.json (read
here), samples.jsonl, environment.json and timings.json (uploaded as they are). The fields read
from summary.json:

    {"model": {"path": str, "role": "baseline" | "variant" | "model", ...},
     "suite": {"name": str, "version": int, ...},
     "metrics": [Metric.to_json(), ...],           # as measured
     "comparison": [Metric.to_json(), ...] | null} # against the baseline on the same inputs

Metric names must be unique across `metrics` and `comparison` of one suite: gates and MLflow
address a number as "<suite>.<metric>".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.metrics import Metric
from quantgate.errors import InputError

SUMMARY_NAME = "summary.json"
UPLOADED_FILES = ("summary.json", "samples.jsonl", "environment.json", "timings.json")
MANIFEST_NAME = "quantgate.json"  # written by quant/ beside a checkpoint's weights

Role = Literal["baseline", "variant", "model"]


@dataclass(frozen=True)
class SuiteResult:
    variant: str  # the checkpoint's folder name (baseline: the BF16 model's folder name)
    suite: str
    suite_version: int
    metrics: list[Metric]  # as measured
    comparison: list[Metric] = field(default_factory=list)  # against the baseline (kl_mean, mcnemar_p, ...)
    artifacts: list[Path] = field(default_factory=list)  # files uploaded with the result
    role: Role = "variant"

    def __post_init__(self) -> None:
        names = [m.name for m in self.metrics + self.comparison]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise InputError(f"{self.variant}/{self.suite}: metric names repeat: {', '.join(repeated)}")

    def metric(self, name: str) -> Metric | None:
        """A metric by name, as measured or from the comparison."""
        return next((m for m in self.metrics + self.comparison if m.name == name), None)

    def to_json(self) -> dict:
        return {
            "variant": self.variant,
            "suite": self.suite,
            "suite_version": self.suite_version,
            "metrics": [m.to_json() for m in self.metrics],
            "comparison": [m.to_json() for m in self.comparison],
            "artifacts": [str(p) for p in self.artifacts],
            "role": self.role,
        }

    @classmethod
    def from_json(cls, data: dict) -> SuiteResult:
        return cls(
            variant=data["variant"],
            suite=data["suite"],
            suite_version=int(data["suite_version"]),
            metrics=[_metric(m) for m in data["metrics"]],
            comparison=[_metric(m) for m in data.get("comparison") or []],
            artifacts=[Path(p) for p in data.get("artifacts", [])],
            role=data.get("role", "variant"),
        )


def _metric(data: dict) -> Metric:
    value = float(data["value"])
    if math.isnan(value):
        raise ValueError(f"metric {data['name']!r} is NaN")
    return Metric(
        name=data["name"],
        value=value,
        direction=data["direction"],
        stderr=None if data.get("stderr") is None else float(data["stderr"]),
        unit=data.get("unit", ""),
        n=data.get("n"),
    )


def read_result_folder(folder: Path) -> SuiteResult:
    """A harness result folder as a SuiteResult; the checkpoint's manifest joins its artifacts."""
    path = folder / SUMMARY_NAME
    try:
        summary = json.loads(path.read_text())
        model, suite = summary["model"], summary["suite"]
        checkpoint = Path(model["path"])
        artifacts = [folder / name for name in UPLOADED_FILES if (folder / name).is_file()]
        if (checkpoint / MANIFEST_NAME).is_file():
            artifacts.append(checkpoint / MANIFEST_NAME)
        elif (folder / MANIFEST_NAME).is_file():  # downloaded from MLflow, where it sits beside the summary
            artifacts.append(folder / MANIFEST_NAME)
        return SuiteResult(
            variant=model.get("name") or checkpoint.name,  # an endpoint: its served model name
            suite=suite["name"],
            suite_version=int(suite["version"]),
            metrics=[_metric(m) for m in summary["metrics"]],
            comparison=[_metric(m) for m in summary.get("comparison") or []],
            artifacts=artifacts,
            role=model.get("role", "variant"),
        )
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: unexpected layout ({type(error).__name__}: {error})") from None


def read_results(root: Path) -> list[SuiteResult]:
    """Every result folder under `root` (a folder holding summary.json counts as one)."""
    if not root.exists():
        raise InputError(f"{root}: missing")
    folders = sorted(
        p.parent
        for p in root.rglob(SUMMARY_NAME)
        if not any(part.startswith(".") for part in p.parts[len(root.parts) :])
    )
    if not folders:
        raise InputError(f"{root}: no {SUMMARY_NAME} under it")
    results = [read_result_folder(folder) for folder in folders]
    seen: dict[tuple[str, str], Path] = {}
    for folder, result in zip(folders, results, strict=True):
        key = (result.variant, result.suite)
        if key in seen:
            raise InputError(f"{folder}: a second result for {key[0]}/{key[1]} (first: {seen[key]})")
        seen[key] = folder
    return results
