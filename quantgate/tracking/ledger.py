"""The local nightly store, and where history gates find the previous passing nightly.

Every gated nightly is kept on local disk as `state/nightlies/<plan>/<ns>-<nightly id>/` (record.json
with its verdict, and copies of each result's files: summary.json, samples.jsonl, environment.json;
written whole, like an outbox entry). History gates read the previous passing nightly of the plan from
MLflow when the tracking server answers, else from this store, and say which; nightlies accepted since
then as the reference of some variants (tracking/acceptance.py) are found on the way.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from quantgate.core.errors import InputError
from quantgate.core.record import read_record
from quantgate.gates.history import History, PreviousNightly
from quantgate.plan import Plan
from quantgate.tracking import acceptance, names, outbox
from quantgate.tracking.nightly_record import NightlyRecord
from quantgate.tracking.store import TrackingStore, client, failure_reason, reachable

if TYPE_CHECKING:
    from mlflow.entities import Run

LEDGER_DIR = "nightlies"


def ledger_dir(state: Path, plan_name: str) -> Path:
    return state / LEDGER_DIR / plan_name


def remember(record: NightlyRecord, state: Path) -> Path:
    """Keep a gated nightly in the local store (a rerun of the same nightly id replaces it)."""
    folder = ledger_dir(state, record.plan_name)
    entry = outbox.write_entry(record, folder, f"{time.time_ns()}-{record.nightly_id}")
    for older in folder.iterdir():
        if older != entry and not older.name.startswith(".") and older.name.split("-", 1)[1] == record.nightly_id:
            shutil.rmtree(older)
    return entry


def entries(state: Path, plan_name: str) -> list[Path]:
    """The plan's nightlies in the local store, newest first."""
    folder = ledger_dir(state, plan_name)
    found = (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[0]), reverse=True)


def entry_id(entry: Path) -> str:
    return entry.name.split("-", 1)[1]


def previous_local(state: Path, plan_name: str, nightly_id: str) -> History | None:
    """The newest passing nightly of the plan in the local store other than `nightly_id`, and the nightlies
    accepted since (per checkpoint, the newest); None when there is neither."""
    accepted: dict[str, PreviousNightly] = {}
    for entry in entries(state, plan_name):
        if entry_id(entry) == nightly_id:
            continue
        record = outbox.read(entry)
        source = f"local nightly store {entry}"
        for checkpoint, why in acceptance.accepted_checkpoints(acceptance.read_local(entry)).items():
            accepted.setdefault(checkpoint, PreviousNightly(record.nightly_id, source, record.results, why))
        if record.verdict == "pass":
            return History(PreviousNightly(record.nightly_id, source, record.results), accepted=accepted)
    return History(None, accepted=accepted) if accepted else None


def previous_in_mlflow(
    store: TrackingStore,
    plan: Plan,
    nightly_id: str,
    dest: Path,
    accepted_here: dict[str, list[acceptance.Acceptance]] | None = None,
) -> History | None:
    """The newest passing nightly of the plan in MLflow other than `nightly_id`, and the nightlies accepted
    since (by their MLflow tag, or by `accepted_here`: nightly id -> acceptances recorded in the local store,
    e.g. while the nightly waited in the outbox), their results' files downloaded under `dest`; None when
    there is neither."""
    from quantgate.tracking.history import download_results, nightlies

    mlflow = client(store)

    downloaded: dict[str, PreviousNightly] = {}  # run id -> its results, downloaded once

    def fetched(parent: Run, accepted: str = "") -> PreviousNightly:
        if parent.info.run_id not in downloaded:
            earlier = parent.data.tags.get(names.TAG_NIGHTLY, parent.info.run_id)
            folders = download_results(store, mlflow, parent, plan.suite_names, dest / earlier)
            downloaded[parent.info.run_id] = PreviousNightly(
                earlier, f"MLflow {store.uri}", [read_record(f) for f in folders]
            )
        return dataclasses.replace(downloaded[parent.info.run_id], accepted=accepted)

    accepted: dict[str, PreviousNightly] = {}
    for parent in nightlies(mlflow, plan.name):
        if parent.data.tags.get(names.TAG_NIGHTLY) == nightly_id:
            continue
        here = (accepted_here or {}).get(parent.data.tags.get(names.TAG_NIGHTLY, ""), [])
        reasons = acceptance.accepted_checkpoints(here + acceptance.read_run(parent))
        for checkpoint, why in reasons.items():
            if checkpoint not in accepted:
                accepted[checkpoint] = fetched(parent, why)
        if parent.data.tags.get(names.TAG_VERDICT) == "pass":
            return History(fetched(parent), accepted=accepted)
    return History(None, accepted=accepted) if accepted else None


def find_previous(plan: Plan, nightly_id: str, store: TrackingStore | None, state: Path) -> History:
    """The previous passing nightly: from MLflow when it answers, else from the local store."""
    from mlflow.exceptions import MlflowException

    why = "no tracking store"
    if store is not None and reachable(store):
        try:
            here = {entry_id(e): acceptance.read_local(e) for e in entries(state, plan.name)}  # maybe not in MLflow
            found = previous_in_mlflow(store, plan, nightly_id, state / "history" / plan.name, here)
        except (MlflowException, OSError) as error:
            why = f"tracking server {store.uri} failed ({failure_reason(error)})"
        else:
            note = f"first nightly: no passing nightly of plan {plan.name} in MLflow {store.uri}"
            return History(None, note) if found is None else _noted(found, note)
    elif store is not None:
        why = f"tracking server {store.uri} unreachable"
    try:
        found = previous_local(state, plan.name, nightly_id)
    except InputError as error:
        return History(None, f"{why}; local nightly store unreadable ({error})")
    note = f"first nightly: {why}, and no passing nightly of plan {plan.name} in the local store"
    return History(None, note) if found is None else _noted(found, note)


def _noted(found: History, note: str) -> History:
    """`found`, with `note` saying why variants without an accepted nightly have nothing to compare with."""
    return found if found.previous is not None else History(None, note, found.accepted)


def upload_acceptances(store: TrackingStore, state: Path) -> list[str]:
    """Copy the acceptances recorded only in the local nightly store (accepted while MLflow was
    unreachable, or while the nightly waited in the outbox) onto their nightly's MLflow runs, once the
    nightly is there; idempotent (acceptance.write_run adds none twice). One line per acceptance copied."""
    from quantgate.tracking.compare import children
    from quantgate.tracking.history import nightlies

    root, mlflow, copied = state / LEDGER_DIR, client(store), []
    for plan_name in sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        local = {entry_id(e): found for e in entries(state, plan_name) if (found := acceptance.read_local(e))}
        for parent in nightlies(mlflow, plan_name) if local else []:
            nightly = parent.data.tags.get(names.TAG_NIGHTLY, "")
            if nightly not in local:
                continue
            runs = {r.data.tags.get(names.TAG_CHECKPOINT, ""): r for r in children(mlflow, parent)}
            added = acceptance.write_run(mlflow, parent, runs, local[nightly])
            copied += [f"plan {plan_name} nightly {nightly}: {a.describe()}" for a in added]
    return copied
