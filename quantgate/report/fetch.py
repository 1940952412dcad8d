"""A nightly's results read back from MLflow, for `quantgate report --nightly ID`.

Shards of a split nightly log their (checkpoint, suite) pairs to one tracking server; this
downloads every logged pair's uploaded files (summary.json, samples.jsonl, ..., the checkpoint's
quantgate.json) into `state/fetched/<nightly id>/` and reads them as the harness wrote them.
"""

from __future__ import annotations

from pathlib import Path

from quantgate.core.errors import InputError
from quantgate.core.record import ResultRecord, read_record
from quantgate.plan import Plan
from quantgate.tracking import names
from quantgate.tracking.store import TrackingStore, client, reachable


def fetch_nightly(store: TrackingStore, plan: Plan, nightly_id: str, dest: Path) -> list[ResultRecord]:
    from quantgate.tracking.history import download_results
    from quantgate.tracking.log import find_runs

    if not reachable(store):
        raise InputError(f"tracking server {store.uri} unreachable: cannot read nightly {nightly_id}")
    mlflow = client(store)
    experiment = mlflow.get_experiment_by_name(names.experiment_name(plan.name))
    parents = (
        find_runs(mlflow, experiment.experiment_id, {names.TAG_KIND: names.KIND_NIGHTLY, names.TAG_NIGHTLY: nightly_id})
        if experiment
        else []
    )
    if not parents:
        raise InputError(f"nightly {nightly_id!r}: not in MLflow experiment {names.experiment_name(plan.name)!r}")
    # a pair not logged (yet) is not downloaded: the gates report it as missing
    return [read_record(folder) for folder in download_results(store, mlflow, parents[0], plan.suite_names, dest)]
