"""Nightlies over time: the previous passing nightly of a plan, changes beyond the measured noise,
and trends over the last N nightlies.

A change is flagged when |current - previous| > k x sqrt(stderr_current^2 + stderr_previous^2)
(k = 2 by default). Metrics without a stderr on both sides carry no noise estimate and are not judged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from tracking import names
from tracking.compare import children, get_run, label, measured
from tracking.log import find_runs

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

NOISE_SIGMAS = 2.0


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


def _by_checkpoint(client: MlflowClient, parent: Run) -> dict[str, Run]:
    return {r.data.tags[names.TAG_CHECKPOINT]: r for r in children(client, parent)}


def changes(
    client: MlflowClient, current_run_id: str, previous_run_id: str, sigmas: float = NOISE_SIGMAS
) -> pd.DataFrame:
    """Every metric with a stderr on both nightlies; `flagged` where the change exceeds the noise."""
    current = _by_checkpoint(client, get_run(client, current_run_id))
    previous = _by_checkpoint(client, get_run(client, previous_run_id))
    rows = []
    for checkpoint in sorted(current.keys() & previous.keys()):
        now, before = measured(current[checkpoint]), measured(previous[checkpoint])
        for key in sorted(now.keys() & before.keys()):
            (value, se_now, direction, _), (old, se_before, _, _) = now[key], before[key]
            if se_now is None or se_before is None:
                continue
            noise = math.hypot(se_now, se_before)
            difference = value - old
            rows.append(
                {
                    "variant": label(current[checkpoint]),
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


def trends(client: MlflowClient, plan_name: str, last: int = 10) -> pd.DataFrame:
    """Values over the last `last` nightlies, oldest first: index nightly id, columns (variant, metric)."""
    rows = []
    for parent in reversed(nightlies(client, plan_name)[:last]):
        nightly = parent.data.tags[names.TAG_NIGHTLY]
        for run in children(client, parent):
            for key, (value, *_rest) in measured(run).items():
                rows.append({"nightly_id": nightly, "variant": label(run), "metric": key, "value": value})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(frame["nightly_id"]))
    table = frame.pivot_table(
        index="nightly_id", columns=["variant", "metric"], values="value", aggfunc="first"
    )
    return table.reindex(order)
