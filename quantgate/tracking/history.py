"""Nightlies over time: the previous passing nightly of a plan, changes beyond the measured noise,
and trends over the last N nightlies.

A change is flagged when |current - previous| > k x sqrt(stderr_current^2 + stderr_previous^2)
(k = 2 by default). Metrics without a stderr on both sides carry no noise estimate and are not judged.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from quantgate.core.record import ResultRecord
from quantgate.tracking import names
from quantgate.tracking.compare import children, get_run, label, measured
from quantgate.tracking.log import find_runs

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from quantgate.tracking.store import TrackingStore

NOISE_SIGMAS = 2.0
Measured = tuple[float, "float | None", str, str]  # value, stderr, direction, unit


def nightlies(client: MlflowClient, plan_name: str, verdict: str | None = None) -> list[Run]:
    """A plan's nightly (parent) runs, newest first."""
    experiment = client.get_experiment_by_name(names.experiment_name(plan_name))
    if experiment is None:
        return []
    tags = {names.TAG_KIND: names.KIND_NIGHTLY} | ({names.TAG_VERDICT: verdict} if verdict else {})
    runs = find_runs(client, experiment.experiment_id, tags)
    return sorted(runs, key=lambda r: r.info.start_time, reverse=True)


def previous_passing(client: MlflowClient, current_run_id: str) -> Run | None:
    current = get_run(client, current_run_id)
    plan = current.data.tags[names.TAG_PLAN]
    earlier = [
        r
        for r in nightlies(client, plan, verdict="pass")
        if r.info.run_id != current_run_id and r.info.start_time <= current.info.start_time
    ]
    return earlier[0] if earlier else None


def previous_passing_nightly(client: MlflowClient, plan_name: str, nightly_id: str) -> Run | None:
    """The newest passing nightly of the plan other than `nightly_id` (which may not be logged yet)."""
    passing = nightlies(client, plan_name, verdict="pass")
    earlier = [r for r in passing if r.data.tags.get(names.TAG_NIGHTLY) != nightly_id]
    return earlier[0] if earlier else None


def download_results(
    store: TrackingStore, client: MlflowClient, parent: Run, suites: list[str], dest: Path
) -> list[Path]:
    """Every logged (checkpoint, suite) pair of a nightly, its uploaded files (summary.json, samples.jsonl,
    environment.json, ...) downloaded into `dest/<checkpoint>/<suite>/`; returns those folders."""
    from mlflow.artifacts import download_artifacts

    shutil.rmtree(dest, ignore_errors=True)
    folders = []
    for run in children(client, parent):
        checkpoint = run.data.tags[names.TAG_CHECKPOINT]
        for suite in suites:
            if run.data.tags.get(names.suite_logged_tag(suite)) != "true":
                continue  # not logged (yet)
            artifact = names.ARTIFACT_SUITE_DIR.format(suite=suite)
            local = download_artifacts(
                run_id=run.info.run_id, artifact_path=artifact, dst_path=str(dest / checkpoint), tracking_uri=store.uri
            )
            folders.append(Path(local))
    return folders


def logged_values(client: MlflowClient, parent: Run) -> dict[str, dict[str, Measured]]:
    """variant label -> metric key -> (value, stderr, direction, unit), from a nightly's child runs."""
    return {label(run): measured(client, run) for run in children(client, parent)}


def record_values(results: list[ResultRecord], labels: dict[str, str]) -> dict[str, dict[str, Measured]]:
    """The same table from result records in hand; `labels`: checkpoint -> variant label."""
    table: dict[str, dict[str, Measured]] = {}
    for result in results:
        row = table.setdefault(labels.get(result.variant, result.variant), {})
        for metric in result.metrics + (result.comparison or []):
            key = names.metric_key(result.suite, metric.name)
            row[key] = (metric.value, metric.stderr, metric.direction, metric.unit)
    return table


def changes(
    client: MlflowClient, current_run_id: str, previous_run_id: str, sigmas: float = NOISE_SIGMAS
) -> pd.DataFrame:
    """Every metric with a stderr on both logged nightlies; `flagged` where the change exceeds the noise."""
    current = logged_values(client, get_run(client, current_run_id))
    return changes_between(current, logged_values(client, get_run(client, previous_run_id)), sigmas)


def changes_between(
    current: dict[str, dict[str, Measured]], previous: dict[str, dict[str, Measured]], sigmas: float = NOISE_SIGMAS
) -> pd.DataFrame:
    """Every metric with a stderr on both sides; `flagged` where the change exceeds the noise."""
    rows = []
    for variant in sorted(current.keys() & previous.keys()):
        now, before = current[variant], previous[variant]
        for key in sorted(now.keys() & before.keys()):
            (value, se_now, direction, _), (old, se_before, _, _) = now[key], before[key]
            if se_now is None or se_before is None:
                continue
            noise = math.hypot(se_now, se_before)
            difference = value - old
            rows.append(
                {
                    "variant": variant,
                    "metric": key,
                    "previous": old,
                    "current": value,
                    "difference": difference,
                    "combined_stderr": noise,
                    "sigmas": abs(difference) / noise if noise > 0 else math.inf if difference else 0.0,
                    "flagged": abs(difference) > sigmas * noise,
                    "worse": (difference < 0)
                    if direction == "higher"
                    else (difference > 0)
                    if direction == "lower"
                    else False,
                }
            )
    columns = [
        "variant",
        "metric",
        "previous",
        "current",
        "difference",
        "combined_stderr",
        "sigmas",
        "flagged",
        "worse",
    ]
    return pd.DataFrame(rows, columns=columns)


def trends(
    client: MlflowClient,
    plan_name: str,
    last: int = 10,
    current: tuple[str, dict[str, dict[str, Measured]]] | None = None,
) -> pd.DataFrame:
    """Values over the last `last` nightlies, oldest first: index nightly id, columns (variant, metric).
    `current` (nightly id, values in hand) is the newest, in place of its logged runs if any."""
    current_id = current[0] if current else None
    logged = [p for p in nightlies(client, plan_name) if p.data.tags.get(names.TAG_NIGHTLY) != current_id]
    logged = logged[: last - (current is not None)]
    tables = [(p.data.tags[names.TAG_NIGHTLY], logged_values(client, p)) for p in logged]
    rows = []
    for nightly, table in reversed(tables):
        for variant, values in table.items():
            for key, (value, *_rest) in values.items():
                rows.append({"nightly_id": nightly, "variant": variant, "metric": key, "value": value})
    for variant, values in (current[1] if current else {}).items():
        for key, (value, *_rest) in values.items():
            rows.append({"nightly_id": current[0], "variant": variant, "metric": key, "value": value})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(frame["nightly_id"]))
    table = frame.pivot_table(
        index="nightly_id", columns=["variant", "metric"], values="value", aggfunc="first"
    )
    return table.reindex(order)
