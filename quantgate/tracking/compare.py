"""`quantgate compare`: variants against the baseline, read back from MLflow, as a pandas table.

One row per (variant, metric key "<suite>.<metric>"): baseline, value, difference (value - baseline),
regression (the difference towards the worse side; positive is worse), recovery %, a 95 % interval
of the value (value ± 1.96 stderr), direction and unit. Comparison-only metrics (KL, flips,
p-values) are rows with no baseline. Values, stderr, directions and units come from the runs' metrics
tables (`metrics/<suite>.json`), or from the keys and tags of runs logged before them.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from quantgate.core.errors import InputError
from quantgate.tracking import names
from quantgate.tracking.log import PARENT_RUN_TAG, find_runs

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

Z95 = 1.959963984540054
COLUMNS = [
    "baseline",
    "value",
    "difference",
    "regression",
    "recovery_pct",
    "ci_low",
    "ci_high",
    "stderr",
    "direction",
    "unit",
]


def get_run(client: MlflowClient, run_id: str) -> Run:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise InputError(f"run {run_id!r}: not found in {client.tracking_uri}") from None


def nightly_run_id(client: MlflowClient, nightly: str) -> str:
    """The parent run of a nightly named by its id (what `report --nightly` takes) or by its run id."""
    from mlflow.exceptions import MlflowException

    experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith(names.EXPERIMENT_PREFIX)]
    tags = {names.TAG_KIND: names.KIND_NIGHTLY, names.TAG_NIGHTLY: nightly}
    found = {r.info.run_id for e in experiments for r in find_runs(client, e, tags)}
    if len(found) == 1:
        return found.pop()
    if len(found) > 1:
        raise InputError(f"nightly {nightly!r}: logged by {len(found)} plans; give its parent run's id")
    try:
        return client.get_run(nightly).info.run_id
    except MlflowException:
        raise InputError(f"nightly {nightly!r}: no nightly with this id or run id in {client.tracking_uri}") from None


def children(client: MlflowClient, parent: Run) -> list[Run]:
    return find_runs(client, parent.info.experiment_id, {PARENT_RUN_TAG: parent.info.run_id})


def measured(client: MlflowClient, run: Run) -> dict[str, tuple[float, float | None, str, str]]:
    """metric key -> (value, stderr, direction, unit) of every metric a run holds (no derived keys):
    from its metrics tables (`metrics/<suite>.json`), or, for runs logged before them, from its keys."""
    tables = [a.path for a in client.list_artifacts(run.info.run_id, names.ARTIFACT_TABLE_DIR)]
    if not tables:
        return _measured_from_keys(run)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(tables):
            local = Path(client.download_artifacts(run.info.run_id, path, tmp))
            table = json.loads(local.read_text())
            suite = Path(path).stem
            for row in (dict(zip(table["columns"], data, strict=True)) for data in table["data"]):
                out[names.metric_key(suite, row["metric"])] = (
                    row["value"], row["stderr"], row["direction"], row["unit"] or ""
                )
    return out


def _measured_from_keys(run: Run) -> dict[str, tuple[float, float | None, str, str]]:
    metrics, tags = run.data.metrics, run.data.tags
    out = {}
    for key, value in metrics.items():
        if names.split_metric_key(key)[1] is None:
            stderr = metrics.get(f"{key}.stderr")
            out[key] = (
                value,
                stderr,
                tags.get(names.direction_tag(key), "none"),
                tags.get(names.unit_tag(key), ""),
            )
    return out


def label(run: Run) -> str:
    return run.data.tags.get(names.TAG_VARIANT) or run.info.run_name or run.info.run_id


def _rows(client: MlflowClient, baseline: Run | None, run: Run) -> list[dict]:
    base = measured(client, baseline) if baseline is not None else {}
    rows = []
    for key, (value, stderr, direction, unit) in sorted(measured(client, run).items()):
        reference = base.get(key, (math.nan,))[0]
        difference = value - reference
        regression = (
            -difference if direction == "higher" else difference if direction == "lower" else math.nan
        )
        if direction == "higher" and reference > 0:
            recovery = 100 * value / reference
        elif direction == "lower" and value > 0:
            recovery = 100 * reference / value
        else:
            recovery = math.nan
        half = Z95 * stderr if stderr is not None else math.nan
        rows.append(
            {
                "variant": label(run),
                "metric": key,
                "baseline": reference,
                "value": value,
                "difference": difference,
                "regression": regression,
                "recovery_pct": recovery,
                "ci_low": value - half,
                "ci_high": value + half,
                "stderr": math.nan if stderr is None else stderr,
                "direction": direction,
                "unit": unit,
            }
        )
    return rows


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["variant", "metric", *COLUMNS])
    return frame.set_index(["variant", "metric"])


def nightly_table(client: MlflowClient, parent_run_id: str) -> pd.DataFrame:
    """Every variant of a nightly against that nightly's baseline run."""
    parent = get_run(client, parent_run_id)
    if parent.data.tags.get(names.TAG_KIND) != names.KIND_NIGHTLY:
        raise InputError(
            f"run {parent_run_id}: not a quantgate nightly (tag {names.TAG_KIND} is not 'nightly')"
        )
    runs = children(client, parent)
    baseline = next((r for r in runs if r.data.tags.get(names.TAG_BASELINE) == "true"), None)
    variants = sorted((r for r in runs if r is not baseline), key=label)
    return _frame([row for run in variants for row in _rows(client, baseline, run)])


def runs_table(client: MlflowClient, baseline_run_id: str, run_id: str) -> pd.DataFrame:
    """Any two runs: the second against the first."""
    return _frame(_rows(client, get_run(client, baseline_run_id), get_run(client, run_id)))
