"""A nightly as one JSON-serialisable record: what the MLflow runs are made from, and what the
outbox stores when the tracking server cannot be reached."""

from __future__ import annotations

import datetime
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from quantgate import __version__
from quantgate.core.errors import InputError
from quantgate.core.provenance import git_revision
from quantgate.core.record import ResultRecord
from quantgate.plan import Plan
from quantgate.tracking import names

RECORD_VERSION = 2  # 2: results are result records (quantgate.core.record); 1 is refused
NIGHTLY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,99}$")


@dataclass(frozen=True)
class CheckpointInfo:
    """How the plan describes one checkpoint of the nightly (the baseline included)."""

    checkpoint: str  # folder name; what result folders are named after
    variant: str  # the plan's variant name ("baseline" name: the model folder)
    scheme: str
    method: str
    calibration: str | None
    group: str
    canary: bool
    baseline: bool


@dataclass(frozen=True)
class NightlyRecord:
    nightly_id: str
    plan_name: str
    plan_hash: str
    plan: dict  # as resolved
    tags: dict[str, str]  # git revision, date, quantgate version, hardware
    checkpoints: list[CheckpointInfo]
    results: list[ResultRecord]
    verdict: str | None = None  # "pass" / "fail" when gated
    passing: list[str] = field(default_factory=list)  # variants that passed every gate (registered in MLflow)
    report_files: list[Path] = field(default_factory=list)  # the nightly's report, logged to the parent run
    version: int = field(default=RECORD_VERSION)

    def __post_init__(self) -> None:
        if not NIGHTLY_ID.match(self.nightly_id):
            raise InputError(
                f"nightly id {self.nightly_id!r}: use letters, digits and . _ : + - (at most 100)"
            )

    def info(self, checkpoint: str) -> CheckpointInfo | None:
        return next((c for c in self.checkpoints if c.checkpoint == checkpoint), None)

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "nightly_id": self.nightly_id,
            "plan_name": self.plan_name,
            "plan_hash": self.plan_hash,
            "plan": self.plan,
            "tags": self.tags,
            "checkpoints": [vars(c) for c in self.checkpoints],
            "results": [r.model_dump(mode="json", by_alias=True) for r in self.results],
            "verdict": self.verdict,
            "passing": self.passing,
            "report_files": [str(p) for p in self.report_files],
        }

    @classmethod
    def from_json(cls, data: dict) -> NightlyRecord:
        if data.get("version") != RECORD_VERSION:
            raise InputError(
                f"nightly record version {data.get('version')!r}; this build reads {RECORD_VERSION}"
            )
        return cls(
            nightly_id=data["nightly_id"],
            plan_name=data["plan_name"],
            plan_hash=data["plan_hash"],
            plan=data["plan"],
            tags=data["tags"],
            checkpoints=[CheckpointInfo(**c) for c in data["checkpoints"]],
            results=[ResultRecord.model_validate(r) for r in data["results"]],
            verdict=data.get("verdict"),
            passing=data.get("passing", []),
            report_files=[Path(p) for p in data.get("report_files", [])],
        )


def hardware() -> str:
    import os

    return f"{platform.machine()} {platform.processor() or 'cpu'} x{os.cpu_count()} {platform.system()}"


def default_nightly_id(plan: Plan, today: datetime.date | None = None) -> str:
    return f"{(today or datetime.date.today()).isoformat()}-{plan.digest()[:8]}"


def nightly_record(
    plan: Plan,
    results: list[ResultRecord],
    nightly_id: str | None = None,
    verdict: str | None = None,
    passing: list[str] | None = None,
) -> NightlyRecord:
    """The record of a nightly: the plan's checkpoints (the baseline first), their results, env tags."""
    baseline = CheckpointInfo(
        plan.baseline_name, plan.baseline_name, "bf16", "none", None, "baseline", False, True
    )
    checkpoints = [baseline] + [
        CheckpointInfo(
            plan.checkpoint_name(v), v.name, v.scheme or ("endpoint" if v.endpoint else "made elsewhere"),
            v.method or "none", v.calibration, v.group,
            v.canary, False,
        )
        for v in plan.variants
    ]
    known = {c.checkpoint for c in checkpoints}
    planned = [r for r in results if r.variant in known and r.suite in plan.suite_names]
    return NightlyRecord(
        nightly_id=nightly_id or default_nightly_id(plan),
        plan_name=plan.name,
        plan_hash=plan.digest(),
        plan=plan.model_dump(mode="json"),
        tags={
            names.TAG_GIT: git_revision(),
            names.TAG_DATE: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            names.TAG_VERSION: __version__,
            names.TAG_HARDWARE: hardware(),
        },
        checkpoints=checkpoints,
        results=sorted(planned, key=lambda r: (r.role != "baseline", r.variant, r.suite)),
        verdict=verdict,
        passing=list(passing or []),
    )
