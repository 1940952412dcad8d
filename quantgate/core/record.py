"""The result record: one (checkpoint, suite) measurement, the one shape every reader takes.

The harness writes it as `summary.json` in a result folder `RESULTS/<checkpoint>/<suite>/`, beside
samples.jsonl, environment.json and timings.json; the baseline cache keeps the same record for each
entry; the nightly's result store, the outbox, the gates, the MLflow logger and the report read it
through `read_record` / `read_results` only.

Versions:
  1  summary.json as quantgate 0.1 wrote it: the same fields without `version`. Read by migration
     (`_migrate`): the fields are taken as they are and `version` is set to 2.
  2  this layout (`version: 2`).
Any other version, or a file that does not validate, is refused with one line naming the file.

Metric names must be unique across `metrics` and `comparison` of one suite: gates and MLflow
address a number as "<suite>.<metric>".
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from quantgate.core.checkpoint import MANIFEST_NAME
from quantgate.core.errors import InputError
from quantgate.core.manifest import Manifest, load_manifest
from quantgate.core.metrics import Metric
from quantgate.core.strict import StrictModel

RESULT_VERSION = 2
RESULT_FILE = "summary.json"
SAMPLES_FILE = "samples.jsonl"
ENVIRONMENT_FILE = "environment.json"
TIMINGS_FILE = "timings.json"
UPLOADED_FILES = (RESULT_FILE, SAMPLES_FILE, ENVIRONMENT_FILE, TIMINGS_FILE)

Role = Literal["baseline", "variant", "model"]


class ModelRef(StrictModel):
    """The checkpoint (or endpoint) a result belongs to."""

    path: str  # the checkpoint folder; for an endpoint its tokenizer folder
    identity: str  # quantgate.core.checkpoint.checkpoint_identity, or the endpoint's
    role: Role
    name: str | None = None  # an endpoint's label (its served model name), or a named checkpoint's
    base_url: str | None = None
    served_model: str | None = None
    cache_key: str | None = None  # on a variant's `baseline`: the baseline cache entry compared with

    @property
    def label(self) -> str:
        return self.name or Path(self.path).name


class ResultRecord(StrictModel):
    version: Literal[2] = RESULT_VERSION
    model: ModelRef
    suite_config: dict[str, Any] = Field(alias="suite")  # the suite's resolved config (name, kind, version, ...)
    baseline: ModelRef | None = None  # what `comparison` was measured against
    metrics: list[Metric]  # as measured
    comparison: list[Metric] | None = None  # against the baseline on the same inputs (kl_mean, mcnemar_p, ...)
    by_layer: dict[str, dict[str, float]] = Field(default_factory=dict)  # layer -> metric -> value
    details: dict[str, Any] = Field(default_factory=dict)  # the suite's extra, JSON-serialisable details
    _folder: Path | None = PrivateAttr(default=None)  # where it was read from (its uploaded files)

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @field_validator("metrics", "comparison")
    @classmethod
    def _finite_or_inf(cls, metrics: list[Metric] | None) -> list[Metric] | None:
        for metric in metrics or []:
            if math.isnan(metric.value):
                raise ValueError(f"metric {metric.name!r} is NaN")
        return metrics

    @model_validator(mode="after")
    def _unique_names(self) -> ResultRecord:
        names = [m.name for m in self.metrics + (self.comparison or [])]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"metric names repeat: {', '.join(repeated)}")
        return self

    # what gates, tracking and reports address a result by
    @property
    def variant(self) -> str:
        return self.model.label

    @property
    def suite(self) -> str:
        return self.suite_config["name"]

    @property
    def suite_version(self) -> int:
        return int(self.suite_config["version"])

    @property
    def role(self) -> Role:
        return self.model.role

    @property
    def folder(self) -> Path | None:
        return self._folder

    def manifest(self) -> Manifest | None:
        """The checkpoint's manifest, when it is among the uploaded files (quantgate-made checkpoints)."""
        found = next((path for path in self.artifacts if path.name == MANIFEST_NAME), None)
        return load_manifest(found.parent) if found else None

    def metric(self, name: str) -> Metric | None:
        """A metric by name, as measured or from the comparison."""
        return next((m for m in self.metrics + (self.comparison or []) if m.name == name), None)

    @property
    def artifacts(self) -> list[Path]:
        """The files uploaded with the result: its folder's files and the checkpoint's manifest."""
        if self._folder is None:
            return []
        files = [self._folder / name for name in (*UPLOADED_FILES, MANIFEST_NAME) if (self._folder / name).is_file()]
        manifest = Path(self.model.path) / MANIFEST_NAME
        if not (self._folder / MANIFEST_NAME).is_file() and manifest.is_file():
            files.append(manifest)
        return files

    def at(self, folder: Path) -> ResultRecord:
        """The same record, read from (or copied to) `folder`."""
        copy = self.model_copy()
        copy._folder = folder
        return copy

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n"

    @classmethod
    def of(
        cls,
        variant: str,
        suite: str,
        suite_version: int,
        metrics: list[Metric],
        comparison: list[Metric] | None = None,
        role: Role = "variant",
    ) -> ResultRecord:
        """A record from its addressable parts (a checkpoint known by name only)."""
        return cls(
            model=ModelRef(path=variant, identity=f"name:{variant}", role=role),
            suite={"name": suite, "version": suite_version},
            metrics=metrics,
            comparison=comparison,
        )


def _migrate(data: dict, path: Path) -> dict:
    version = data.get("version", 1)
    if version == 1:  # quantgate 0.1: the same fields, no version
        data = {key: value for key, value in data.items() if key != "version"} | {"version": RESULT_VERSION}
        for ref in ("model", "baseline"):
            if isinstance(data.get(ref), dict) and "identity" not in data[ref]:
                data[ref] = data[ref] | {"identity": "unknown"}
        return data
    if version != RESULT_VERSION:
        raise InputError(f"{path}: result record version {version!r}; this quantgate reads 1 and {RESULT_VERSION}")
    return data


def parse_record(text: str, path: Path) -> ResultRecord:
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise InputError(f"{path}: not a result record (a JSON object expected)")
        return ResultRecord.model_validate(_migrate(data, path))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "record"
        raise InputError(f"{path}: {where}: {first['msg']}") from None


def read_record(folder: Path) -> ResultRecord:
    """The record in a result folder (RESULT_FILE), knowing its folder for its uploaded files."""
    path = folder / RESULT_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    return parse_record(text, path).at(folder)


def write_record(folder: Path, record: ResultRecord) -> None:
    """RESULT_FILE in `folder`, written whole (temporary name, then rename)."""
    tmp = folder / f".{RESULT_FILE}.tmp-{os.getpid()}"
    tmp.write_text(record.to_json())
    tmp.rename(folder / RESULT_FILE)


def read_results(root: Path) -> list[ResultRecord]:
    """Every result folder under `root` (a folder holding RESULT_FILE counts as one)."""
    if not root.exists():
        raise InputError(f"{root}: missing")
    folders = sorted(
        p.parent
        for p in root.rglob(RESULT_FILE)
        if not any(part.startswith(".") for part in p.parts[len(root.parts) :])
    )
    if not folders:
        raise InputError(f"{root}: no {RESULT_FILE} under it")
    results = [read_record(folder) for folder in folders]
    seen: dict[tuple[str, str], Path] = {}
    for folder, result in zip(folders, results, strict=True):
        key = (result.variant, result.suite)
        if key in seen:
            raise InputError(f"{folder}: a second result for {key[0]}/{key[1]} (first: {seen[key]})")
        seen[key] = folder
    return results
