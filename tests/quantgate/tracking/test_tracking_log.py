"""Nightlies logged to a real MLflow server and to the embedded sqlite store: runs, params, metrics,
tags and artifacts are all there, and logging twice makes no duplicates."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from quantgate.core.record import ResultRecord
from quantgate.tracking import names
from quantgate.tracking.log import PARENT_RUN_TAG, log_nightly
from quantgate.tracking.nightly_record import nightly_record
from quantgate.tracking.store import TrackingStore, resolve_store


def runs_of(client: MlflowClient, experiment_id: str):
    return client.search_runs([experiment_id], max_results=1000)


def test_nightly_is_logged_completely(
    store: TrackingStore, nightly_results: Callable[..., list[ResultRecord]], make_plan
):
    plan = make_plan()
    record = nightly_record(plan, nightly_results(good_ppl=10.5), "2026-11-29-test", "pass", passing=["good"])
    client = MlflowClient(tracking_uri=store.uri)
    runs = log_nightly(client, store, record)

    experiment = client.get_experiment_by_name(f"quantgate/{plan.name}")
    assert experiment.experiment_id == runs.experiment_id
    parent = client.get_run(runs.parent_run_id)
    tags = parent.data.tags
    assert tags[names.TAG_KIND] == "nightly" and tags[names.TAG_NIGHTLY] == "2026-11-29-test"
    assert tags[names.TAG_PLAN_HASH] == plan.digest() and tags[names.TAG_VERDICT] == "pass"
    for key in (names.TAG_GIT, names.TAG_DATE, names.TAG_VERSION, names.TAG_HARDWARE):
        assert tags[key]
    assert [a.path for a in client.list_artifacts(runs.parent_run_id)] == ["plan.json"]

    children = {
        r.data.tags[names.TAG_CHECKPOINT]: r
        for r in runs_of(client, runs.experiment_id)
        if r.data.tags.get(PARENT_RUN_TAG) == runs.parent_run_id
    }
    assert set(children) == {"tiny", "tiny-w4a16-g128-rtn", "tiny-w2a16-g32-rtn"}
    assert children["tiny"].data.tags[names.TAG_BASELINE] == "true"
    assert children["tiny-w2a16-g32-rtn"].data.tags[names.TAG_CANARY] == "true"

    good = children["tiny-w4a16-g128-rtn"]
    assert good.data.tags[names.TAG_BASELINE] == "false" and good.data.tags[names.TAG_VARIANT] == "good"
    assert good.data.params == {
        "scheme": "w4a16-g128",
        "method": "rtn",
        "calibration": "none",
        "group": "int4",
        "suite.perplexity.version": "1",
        "suite.benchmark.version": "1",
    }
    # headline keys only (quantgate.core.headline), with their recovery, at the nightly's step
    metrics = good.data.metrics
    assert metrics == {
        "perplexity.perplexity": 10.5,
        "perplexity.perplexity.recovery_pct": pytest.approx(100 * 10 / 10.5),
        "perplexity.kl_mean": 0.02,
        "benchmark.acc": 0.79,
        "benchmark.acc.recovery_pct": pytest.approx(100 * 0.79 / 0.8),
    }
    assert tags[names.TAG_STEP] == "0"
    assert {m.step for m in client.get_metric_history(good.info.run_id, "perplexity.perplexity")} == {0}
    assert not [t for t in good.data.tags if t.startswith("quantgate.direction.")]  # said once, in the table
    assert good.data.tags[names.suite_logged_tag("benchmark")] == "true"
    assert set(children["tiny"].data.metrics) == {"perplexity.perplexity", "benchmark.acc"}
    assert children["tiny"].info.run_name == "baseline (tiny)"
    # every metric, with stderr, delta, direction and unit: one MLflow table per suite
    from quantgate.tracking.compare import measured

    table = json.loads(Path(client.download_artifacts(good.info.run_id, "metrics/perplexity.json")).read_text())
    row = dict(zip(table["columns"], table["data"][0], strict=True))
    assert (row["metric"], row["stderr"], row["delta"], row["direction"]) == ("perplexity", 0.05, 0.5, "lower")
    every = measured(client, good)
    assert every["benchmark.pass_2"] == (0.7, None, "higher", "")  # "pass^2": MLflow takes no "^" in a key
    assert every["benchmark.acc_mcnemar_p"][0] == 0.4 and every["perplexity.kl_mean"][2] == "lower"
    # the passing variant is in the model registry, as candidate and (the nightly passed) release
    version = client.get_model_version_by_alias(f"{plan.name}.good", "release")
    assert version.run_id == good.info.run_id and version.tags[names.TAG_NIGHTLY] == "2026-11-29-test"
    assert client.get_model_version_by_alias(f"{plan.name}.good", "candidate").version == version.version
    logged = {a.path for a in client.list_artifacts(good.info.run_id, "suites/perplexity")}
    assert logged == {"suites/perplexity/summary.json", "suites/perplexity/samples.jsonl"}
    samples = client.download_artifacts(good.info.run_id, "suites/perplexity/samples.jsonl")
    assert open(samples).read().count("\n") == 2


def test_logging_twice_makes_no_duplicates(
    store: TrackingStore, nightly_results: Callable[..., list[ResultRecord]], make_plan
):
    record = nightly_record(make_plan(), nightly_results(), "nightly-twice")
    client = MlflowClient(tracking_uri=store.uri)
    first = log_nightly(client, store, record)
    again = log_nightly(client, store, record)
    assert first.suites_logged == 6 and again.suites_logged == 0
    assert (again.parent_run_id, again.child_run_ids) == (first.parent_run_id, first.child_run_ids)
    assert len(runs_of(client, first.experiment_id)) == 7  # one parent, three children, three trend runs
    child = first.child_run_ids["tiny-w4a16-g128-rtn"]
    assert len(client.get_metric_history(child, "perplexity.perplexity")) == 1


def test_each_nightly_is_charted_at_its_own_step(
    store: TrackingStore, nightly_results: Callable[..., list[ResultRecord]], make_plan
):
    """Nightlies of a plan are logged at steps 0, 1, 2: MLflow charts a variant across them in order."""
    plan, client = make_plan(), MlflowClient(tracking_uri=store.uri)
    steps = []
    for night, ppl in enumerate((10.5, 10.6, 10.4)):
        runs = log_nightly(client, store, nightly_record(plan, nightly_results(ppl, tag=str(night)), f"n-{night}"))
        child = runs.child_run_ids["tiny-w4a16-g128-rtn"]
        steps += [(m.step, m.value) for m in client.get_metric_history(child, "perplexity.perplexity")]
    assert steps == [(0, 10.5), (1, 10.6), (2, 10.4)]
    # and one trend run per variant holds them all: its Model metrics page draws the line
    trends = "tags.`quantgate.kind` = 'trend' and tags.`quantgate.variant` = 'good'"
    [trend] = client.search_runs([runs.experiment_id], trends)
    history = client.get_metric_history(trend.info.run_id, "perplexity.perplexity")
    assert sorted((m.step, m.value) for m in history) == steps and trend.info.run_name == "trend: good"
    log_nightly(client, store, nightly_record(plan, nightly_results(10.4, tag="2"), "n-2"))  # again: no new point
    assert len(client.get_metric_history(trend.info.run_id, "perplexity.perplexity")) == 3


def test_tracking_uri_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("QUANTGATE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    default = resolve_store()
    assert default.uri == f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    assert default.artifact_root == tmp_path / "state" / "mlartifacts"
    import os

    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_store().uri == "http://tracking.example:5000" and resolve_store().is_remote
    assert resolve_store("http://127.0.0.1:1").uri == "http://127.0.0.1:1"
