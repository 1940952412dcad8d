"""Write a NightlyRecord to MLflow: one experiment per plan, a parent run per nightly, a child run
per checkpoint (the baseline's tagged), metrics named by tracking/names.py.

Idempotent: runs are found by their tags before any is made, and a (nightly, checkpoint, suite)
whose `quantgate.logged.<suite>` tag is set is not logged again, so logging a record twice (or
syncing an outbox entry that was half uploaded) makes no duplicate runs or metric points.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quantgate.core.record import ResultRecord
from quantgate.gates.evaluate import recovery
from quantgate.tracking import names
from quantgate.tracking.nightly_record import CheckpointInfo, NightlyRecord
from quantgate.tracking.store import TrackingStore

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own tag for nested runs


@dataclass(frozen=True)
class NightlyRuns:
    experiment_id: str
    parent_run_id: str
    child_run_ids: dict[str, str]  # checkpoint -> run id
    suites_logged: int  # (checkpoint, suite) pairs logged now; 0 when everything was there already


def _filter(tags: dict[str, str]) -> str:
    return " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())


def find_runs(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> list[Run]:
    return client.search_runs([experiment_id], filter_string=_filter(tags), max_results=1000)


def experiment_id(client: MlflowClient, store: TrackingStore, plan_name: str) -> str:
    name = names.experiment_name(plan_name)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=store.artifact_location(name))


def _find_or_create(
    client: MlflowClient, experiment: str, key: dict[str, str], tags: dict[str, str], name: str
) -> str:
    found = find_runs(client, experiment, key)
    if found:
        return sorted(found, key=lambda r: r.info.start_time)[0].info.run_id
    return client.create_run(experiment, tags=key | tags, run_name=name).info.run_id


def _parent(client: MlflowClient, experiment: str, record: NightlyRecord) -> str:
    key = {names.TAG_KIND: names.KIND_NIGHTLY, names.TAG_NIGHTLY: record.nightly_id}
    tags = record.tags | {names.TAG_PLAN: record.plan_name, names.TAG_PLAN_HASH: record.plan_hash}
    run_id = _find_or_create(client, experiment, key, tags, f"nightly {record.nightly_id}")
    with tempfile.TemporaryDirectory() as tmp:
        plan_file = Path(tmp) / names.ARTIFACT_PLAN
        plan_file.write_text(json.dumps(record.plan, indent=2, sort_keys=True) + "\n")
        client.log_artifact(run_id, str(plan_file))
    return run_id


def _child(
    client: MlflowClient, experiment: str, parent: str, record: NightlyRecord, info: CheckpointInfo
) -> str:
    key = {
        names.TAG_KIND: names.KIND_VARIANT,
        names.TAG_NIGHTLY: record.nightly_id,
        names.TAG_CHECKPOINT: info.checkpoint,
    }
    tags = {
        PARENT_RUN_TAG: parent,
        names.TAG_PLAN: record.plan_name,
        names.TAG_PLAN_HASH: record.plan_hash,
        names.TAG_VARIANT: info.variant,
        names.TAG_GROUP: info.group,
        names.TAG_CANARY: str(info.canary).lower(),
        names.TAG_BASELINE: str(info.baseline).lower(),
    }
    run_id = _find_or_create(client, experiment, key, tags, info.variant)
    params = {
        names.PARAM_SCHEME: info.scheme,
        names.PARAM_METHOD: info.method,
        names.PARAM_CALIBRATION: info.calibration or "none",
        names.PARAM_GROUP: info.group,
    }
    existing = client.get_run(run_id).data.params
    for param, value in params.items():
        if param not in existing:
            client.log_param(run_id, param, value)
    return run_id


def _manifest_params(result: ResultRecord) -> dict[str, str]:
    """The resolved scheme from the checkpoint's manifest, when it is among the uploaded files."""
    manifest = result.manifest()
    if manifest is None:
        return {}
    fields = {
        "name": manifest.scheme.name,
        "version": manifest.scheme.scheme_version,
        "ignore": json.dumps(manifest.scheme.ignore),
        "quantization_config": json.dumps(manifest.scheme.quantization_config, sort_keys=True),
        "bits_per_weight": json.dumps(manifest.bits_per_weight.model_dump(), sort_keys=True),
    }
    return {names.PARAM_MANIFEST_SCHEME.format(field=k): str(v)[:6000] for k, v in fields.items()}


def metric_points(
    result: ResultRecord, baseline: ResultRecord | None
) -> tuple[dict[str, float], dict[str, str]]:
    """(metric key -> value, tag key -> value) for one suite result: values, stderr, delta, recovery %."""
    values: dict[str, float] = {}
    tags: dict[str, str] = {}
    measured = [(m, baseline.metric(m.name) if baseline else None) for m in result.metrics]
    for metric, base in measured + [(m, None) for m in result.comparison or []]:
        key = names.metric_key(result.suite, metric.name)
        values[key] = metric.value
        tags[names.direction_tag(key)] = metric.direction
        if metric.unit:
            tags[names.unit_tag(key)] = metric.unit
        if metric.stderr is not None:
            values[names.metric_key(result.suite, metric.name, "stderr")] = metric.stderr
        if base is not None and result is not baseline:
            values[names.metric_key(result.suite, metric.name, "delta")] = metric.value - base.value
            ratio = recovery(metric, base)
            if ratio is not None:
                values[names.metric_key(result.suite, metric.name, "recovery_pct")] = float(ratio * 100)
    return values, tags


def _log_suite(client: MlflowClient, run_id: str, result: ResultRecord, baseline: ResultRecord | None) -> None:
    from mlflow.entities import Metric as MlflowMetric
    from mlflow.entities import Param, RunTag

    values, tags = metric_points(result, baseline)
    now = int(time.time() * 1000)
    existing = client.get_run(run_id).data.params
    params = {names.PARAM_SUITE_VERSION.format(suite=result.suite): str(result.suite_version)}
    params |= _manifest_params(result)
    metrics = [MlflowMetric(key, value, now, 0) for key, value in values.items()]
    for first in range(0, len(metrics), 900):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=metrics[first : first + 900])
    client.log_batch(
        run_id,
        params=[Param(k, v) for k, v in params.items() if k not in existing],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    for path in result.artifacts:
        if path.is_file():
            client.log_artifact(run_id, str(path), names.ARTIFACT_SUITE_DIR.format(suite=result.suite))
    client.set_tag(run_id, names.suite_logged_tag(result.suite), "true")  # last: the pair is complete


def log_nightly(client: MlflowClient, store: TrackingStore, record: NightlyRecord) -> NightlyRuns:
    experiment = experiment_id(client, store, record.plan_name)
    parent = _parent(client, experiment, record)
    baselines = {r.suite: r for r in record.results if r.role == "baseline"}
    children: dict[str, str] = {}
    logged = 0
    for info in record.checkpoints:
        results = [r for r in record.results if r.variant == info.checkpoint]
        if not results:
            continue
        run_id = children[info.checkpoint] = _child(client, experiment, parent, record, info)
        done = client.get_run(run_id).data.tags
        for result in results:
            if done.get(names.suite_logged_tag(result.suite)) == "true":
                continue
            _log_suite(client, run_id, result, baselines.get(result.suite))
            logged += 1
        client.set_terminated(run_id, "FINISHED")
    for path in record.report_files:
        if path.is_file():
            client.log_artifact(parent, str(path), names.ARTIFACT_REPORT_DIR)
    if record.verdict is not None:
        client.set_tag(parent, names.TAG_VERDICT, record.verdict)
    client.set_terminated(parent, "FINISHED")
    return NightlyRuns(experiment, parent, children, logged)
