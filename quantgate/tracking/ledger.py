"""The local nightly store, and where history gates find the previous passing nightly.

Every gated nightly is kept on local disk as `state/nightlies/<plan>/<ns>-<nightly id>/` (record.json
with its verdict, and copies of each result's files: summary.json, samples.jsonl, environment.json;
written whole, like an outbox entry). History gates read the previous passing nightly of the plan from
MLflow when the tracking server answers, else from this store, and say which.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from quantgate.core.errors import InputError
from quantgate.core.record import read_record
from quantgate.gates.history import History, PreviousNightly
from quantgate.plan import Plan
from quantgate.tracking import names, outbox
from quantgate.tracking.nightly_record import NightlyRecord
from quantgate.tracking.store import TrackingStore, client, failure_reason, reachable

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


def previous_local(state: Path, plan_name: str, nightly_id: str) -> PreviousNightly | None:
    """The newest passing nightly of the plan in the local store, other than `nightly_id`."""
    folder = ledger_dir(state, plan_name)
    entries = sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else [],
        key=lambda p: int(p.name.split("-", 1)[0]),
        reverse=True,
    )
    for entry in entries:
        if entry.name.split("-", 1)[1] == nightly_id:
            continue
        record = outbox.read(entry)
        if record.verdict == "pass":
            return PreviousNightly(record.nightly_id, f"local nightly store {entry}", record.results)
    return None


def previous_in_mlflow(store: TrackingStore, plan: Plan, nightly_id: str, dest: Path) -> PreviousNightly | None:
    """The newest passing nightly of the plan in MLflow other than `nightly_id`, its results' files
    downloaded under `dest`."""
    from quantgate.tracking.history import download_results, previous_passing_nightly

    mlflow = client(store)
    parent = previous_passing_nightly(mlflow, plan.name, nightly_id)
    if parent is None:
        return None
    earlier = parent.data.tags.get(names.TAG_NIGHTLY, parent.info.run_id)
    folders = download_results(store, mlflow, parent, plan.suite_names, dest / earlier)
    return PreviousNightly(earlier, f"MLflow {store.uri}", [read_record(f) for f in folders])


def find_previous(plan: Plan, nightly_id: str, store: TrackingStore | None, state: Path) -> History:
    """The previous passing nightly: from MLflow when it answers, else from the local store."""
    from mlflow.exceptions import MlflowException

    why = "no tracking store"
    if store is not None and reachable(store):
        try:
            previous = previous_in_mlflow(store, plan, nightly_id, state / "history" / plan.name)
        except (MlflowException, OSError) as error:
            why = f"tracking server {store.uri} failed ({failure_reason(error)})"
        else:
            if previous is None:
                return History(None, f"first nightly: no passing nightly of plan {plan.name} in MLflow {store.uri}")
            return History(previous)
    elif store is not None:
        why = f"tracking server {store.uri} unreachable"
    try:
        previous = previous_local(state, plan.name, nightly_id)
    except InputError as error:
        return History(None, f"{why}; local nightly store unreadable ({error})")
    if previous is None:
        return History(None, f"first nightly: {why}, and no passing nightly of plan {plan.name} in the local store")
    return History(previous)
