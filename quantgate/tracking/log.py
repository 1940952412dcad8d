"""Write a NightlyRecord to MLflow: one experiment per plan, a parent run per nightly, a child run
per checkpoint (the baseline's named and tagged as such), named by tracking/names.py.

What a team browses: a few headline metric keys per suite (quantgate.core.headline), each with its
recovery against the baseline, logged at the nightly's step (its ordinal in the experiment), so
MLflow charts a variant across nightlies; every metric of a suite, with stderr, delta, recovery,
direction and unit, as one MLflow table per suite (`metrics/<suite>.json`); the suite's data files
as MLflow dataset inputs with their sha256; variants that pass every gate in the model registry.

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

from quantgate.core.checkpoint import sha256_file
from quantgate.core.headline import headline_metrics
from quantgate.core.record import ResultRecord
from quantgate.gates.evaluate import recovery
from quantgate.tracking import names
from quantgate.tracking.nightly_record import CheckpointInfo, NightlyRecord
from quantgate.tracking.registry import register_passing
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
    tags = {  # MLflow's UI opens it on the runs (model training), not on GenAI traces; its note says what it is
        "mlflow.experimentKind": "custom_model_development",
        "mlflow.note.content": f"quantgate nightlies of plan {plan_name}: a parent run per nightly, a child run per "
        "checkpoint (the baseline's named so); headline metrics as keys, every metric in metrics/<suite>.json.",
    }
    return client.create_experiment(name, artifact_location=store.artifact_location(name), tags=tags)


def _find_or_create(
    client: MlflowClient, experiment: str, key: dict[str, str], tags: dict[str, str], name: str
) -> str:
    found = find_runs(client, experiment, key)
    if found:
        return sorted(found, key=lambda r: r.info.start_time)[0].info.run_id
    return client.create_run(experiment, tags=key | tags, run_name=name).info.run_id


def _parent(client: MlflowClient, experiment: str, record: NightlyRecord) -> tuple[str, int]:
    """The nightly's parent run and its step: the number of the plan's nightlies logged before it, so
    that every metric of this nightly is charted after those of earlier nightlies."""
    key = {names.TAG_KIND: names.KIND_NIGHTLY, names.TAG_NIGHTLY: record.nightly_id}
    tags = record.tags | {names.TAG_PLAN: record.plan_name, names.TAG_PLAN_HASH: record.plan_hash}
    found = find_runs(client, experiment, key)
    if found:
        run = sorted(found, key=lambda r: r.info.start_time)[0]
        return run.info.run_id, int(run.data.tags.get(names.TAG_STEP, "0"))
    earlier = find_runs(client, experiment, {names.TAG_KIND: names.KIND_NIGHTLY})
    step = len({r.data.tags.get(names.TAG_NIGHTLY) for r in earlier})
    run_id = client.create_run(
        experiment, tags=key | tags | {names.TAG_STEP: str(step)}, run_name=f"nightly {record.nightly_id}"
    ).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        plan_file = Path(tmp) / names.ARTIFACT_PLAN
        plan_file.write_text(json.dumps(record.plan, indent=2, sort_keys=True) + "\n")
        client.log_artifact(run_id, str(plan_file))
    return run_id, step


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
    name = f"baseline ({info.variant})" if info.baseline else info.variant
    run_id = _find_or_create(client, experiment, key, tags, name)
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


def metric_points(result: ResultRecord, baseline: ResultRecord | None) -> dict[str, float]:
    """The run's metric keys for one suite result: its headline metrics, and the recovery against
    the baseline of each measured one (`<suite>.<metric>.recovery_pct`)."""
    values: dict[str, float] = {}
    kind = str(result.suite_config.get("kind", result.suite))
    for metric in headline_metrics(kind, result.metrics, result.comparison):
        key = names.metric_key(result.suite, metric.name)
        values[key] = metric.value
        base = baseline.metric(metric.name) if baseline is not None and result is not baseline else None
        if base is not None and metric in result.metrics and (ratio := recovery(metric, base)) is not None:
            values[names.metric_key(result.suite, metric.name, "recovery_pct")] = float(ratio * 100)
    return values


def metrics_table(result: ResultRecord, baseline: ResultRecord | None) -> dict[str, list]:
    """Every metric of one suite result, one row each, as an MLflow table (`client.log_table`)."""
    headline = {m.name for m in headline_metrics(str(result.suite_config.get("kind", result.suite)),
                                                 result.metrics, result.comparison)}  # fmt: skip
    rows = []
    for metric in result.metrics + (result.comparison or []):
        measured = metric in result.metrics
        base = baseline.metric(metric.name) if measured and baseline is not None and result is not baseline else None
        ratio = recovery(metric, base) if base is not None else None
        rows.append({
            "metric": metric.name, "value": metric.value, "stderr": metric.stderr,
            "baseline": base.value if base else None, "delta": metric.value - base.value if base else None,
            "recovery_pct": float(ratio * 100) if ratio is not None else None,
            "direction": metric.direction, "unit": metric.unit, "n": metric.n,
            "source": "measured" if measured else "comparison", "headline": metric.name in headline,
        })  # fmt: skip
    return {column: [row[column] for row in rows] for column in names.TABLE_COLUMNS}


def datasets(result: ResultRecord) -> list:
    """The suite's data files (config fields naming a file) as MLflow datasets with their sha256."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for field, value in sorted(result.suite_config.items()):
        if isinstance(value, str) and value and Path(value).is_file():
            digest = sha256_file(Path(value))
            source = json.dumps({"uri": value, "sha256": digest})
            dataset = Dataset(f"{result.suite}.{field}", digest[:36], "local", source)
            inputs.append(DatasetInput(dataset, [InputTag("mlflow.data.context", result.suite)]))
    return inputs


def _log_suite(
    client: MlflowClient, run_id: str, result: ResultRecord, baseline: ResultRecord | None, step: int
) -> None:
    from mlflow.entities import Metric as MlflowMetric
    from mlflow.entities import Param

    now = int(time.time() * 1000)
    run = client.get_run(run_id).data  # a pair half logged by a killed upload: add only what is missing
    existing = run.params
    params = {names.PARAM_SUITE_VERSION.format(suite=result.suite): str(result.suite_version)}
    params |= _manifest_params(result)
    points = metric_points(result, baseline).items()
    metrics = [MlflowMetric(key, value, now, step) for key, value in points if key not in run.metrics]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items() if k not in existing])
    client.log_table(run_id, metrics_table(result, baseline), names.ARTIFACT_TABLE.format(suite=result.suite))
    if inputs := datasets(result):
        client.log_inputs(run_id, datasets=inputs)
    for path in result.artifacts:
        if path.is_file():
            client.log_artifact(run_id, str(path), names.ARTIFACT_SUITE_DIR.format(suite=result.suite))
    client.set_tag(run_id, names.suite_logged_tag(result.suite), "true")  # last: the pair is complete


def _log_trend(
    client: MlflowClient, experiment: str, record: NightlyRecord, info: CheckpointInfo, results: list, step: int,
    baselines: dict[str, ResultRecord],
) -> None:
    """The variant's headline keys at this nightly's step in its trend run (one per plan and variant, not
    nested): its Model metrics page charts each key across nightlies. A step already there is kept."""
    from mlflow.entities import Metric as MlflowMetric

    key = {names.TAG_KIND: names.KIND_TREND, names.TAG_PLAN: record.plan_name, names.TAG_VARIANT: info.variant}
    tags = {names.TAG_GROUP: info.group, names.TAG_CANARY: str(info.canary).lower(),
            names.TAG_BASELINE: str(info.baseline).lower()}  # fmt: skip
    name = f"trend: {'baseline ' if info.baseline else ''}{info.variant}"
    run_id = _find_or_create(client, experiment, key, tags, name)
    points = {k: v for r in results for k, v in metric_points(r, baselines.get(r.suite)).items()}
    now = int(time.time() * 1000)
    new = [MlflowMetric(k, v, now, step) for k, v in points.items()
           if all(m.step != step for m in client.get_metric_history(run_id, k))]  # fmt: skip
    if new:
        client.log_batch(run_id, metrics=new)
    client.set_terminated(run_id, "FINISHED")


def log_nightly(client: MlflowClient, store: TrackingStore, record: NightlyRecord) -> NightlyRuns:
    experiment = experiment_id(client, store, record.plan_name)
    parent, step = _parent(client, experiment, record)
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
            _log_suite(client, run_id, result, baselines.get(result.suite), step)
            logged += 1
        client.set_terminated(run_id, "FINISHED")
        _log_trend(client, experiment, record, info, results, step, baselines)
    for path in record.report_files:
        if path.is_file():
            client.log_artifact(parent, str(path), names.ARTIFACT_REPORT_DIR)
    if record.verdict is not None:
        client.set_tag(parent, names.TAG_VERDICT, record.verdict)
        register_passing(client, record, children)
    client.set_terminated(parent, "FINISHED")
    return NightlyRuns(experiment, parent, children, logged)
