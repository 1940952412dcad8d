"""Accepted references: a nightly whose values of some variants are intended (a new quantization default,
a new calibration set) becomes their reference for the history gates, recorded with when, by whom and why.

`quantgate accept --plan P --nightly ID [--variant V ...] --reason TEXT` writes the acceptance where the
nightly is kept: as the tag `quantgate.accepted` (a JSON list of acceptances) on its MLflow parent run,
with `quantgate.accepted_reason` on each accepted variant's child run, and as `accepted.json` in its
entry of the local nightly store (tracking/ledger.py). The next nightly's history gates compare each
accepted variant with the newest nightly that passed or was accepted for it (gates/history.py).

An acceptance recorded only locally (MLflow unreachable at `accept` time, or the nightly still in the
outbox) is copied onto the nightly's runs by `quantgate sync` (ledger.upload_acceptances) once both are
in MLflow; one already there (same nightly, variants, reason, time and author) is never added twice.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quantgate.core.errors import InputError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

ACCEPTED_FILE = "accepted.json"  # in a local nightly store entry: a list of acceptances
TAG_ACCEPTED = "quantgate.accepted"  # on the nightly's parent run: the same list, as JSON
TAG_ACCEPTED_REASON = "quantgate.accepted_reason"  # on each accepted variant's child run


@dataclass(frozen=True)
class Acceptance:
    nightly_id: str
    checkpoints: list[str]  # result folder names of the accepted variants
    variants: list[str]  # their plan names
    reason: str
    at: str  # UTC, ISO 8601 to the second
    by: str

    def describe(self) -> str:
        return f"accepted as the reference {self.at} by {self.by}: {self.reason}"


def new_acceptance(nightly_id: str, checkpoints: list[str], variants: list[str], reason: str) -> Acceptance:
    if not reason.strip():
        raise InputError("--reason: say why the change is intended (it is shown beside every gate compared with it)")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Acceptance(nightly_id, checkpoints, variants, reason.strip(), now, getpass.getuser())


def parse(text: str, where: str) -> list[Acceptance]:
    try:
        return [Acceptance(**item) for item in json.loads(text)]
    except (json.JSONDecodeError, TypeError) as error:
        raise InputError(f"{where}: unreadable acceptance ({error})") from None


def accepted_checkpoints(acceptances: list[Acceptance]) -> dict[str, str]:
    """checkpoint -> the description of its latest acceptance."""
    return {c: a.describe() for a in acceptances for c in a.checkpoints}


# -- local nightly store ----------------------------------------------------------------------------------
def read_local(entry: Path) -> list[Acceptance]:
    path = entry / ACCEPTED_FILE
    return parse(path.read_text(), str(path)) if path.is_file() else []


def write_local(entry: Path, acceptance: Acceptance) -> Path:
    """Append to the entry's accepted.json, written whole (temporary name, then rename)."""
    path = entry / ACCEPTED_FILE
    tmp = entry / f".{ACCEPTED_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps([asdict(a) for a in [*read_local(entry), acceptance]], indent=2) + "\n")
    os.replace(tmp, path)
    return path


# -- MLflow ---------------------------------------------------------------------------------------------
def read_run(run: Run) -> list[Acceptance]:
    text = run.data.tags.get(TAG_ACCEPTED)
    return parse(text, f"MLflow run {run.info.run_id} tag {TAG_ACCEPTED}") if text else []


def write_run(client: MlflowClient, parent: Run, children: dict[str, Run], new: list[Acceptance]) -> list[Acceptance]:
    """Tag the nightly's parent run with every acceptance so far, oldest first, and each accepted child run
    with why (its latest acceptance). One already on the run is not added again; returns those added."""
    logged = read_run(parent)
    added = [a for i, a in enumerate(new) if a not in logged and a not in new[:i]]
    if not added:
        return []
    acceptances = sorted([*logged, *added], key=lambda a: a.at)  # ISO 8601 UTC: sorts as time
    client.set_tag(parent.info.run_id, TAG_ACCEPTED, json.dumps([asdict(a) for a in acceptances]))
    for checkpoint, why in accepted_checkpoints(acceptances).items():
        if checkpoint in children:
            client.set_tag(children[checkpoint].info.run_id, TAG_ACCEPTED_REASON, why)
    return added
