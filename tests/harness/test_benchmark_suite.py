"""The benchmark suite runs lm-eval for real on the bundled model, offline, and keeps per-sample rows."""

from __future__ import annotations

import os

import pytest
import yaml

from harness.suites.benchmark import BENCHMARK_SUITE, BenchmarkSuiteConfig
from quantgate.core.shipped import shipped_root

LIMIT = 12


def load_config(**overrides) -> BenchmarkSuiteConfig:
    raw = yaml.safe_load((shipped_root() / "benchmark.yaml").read_text())
    return BenchmarkSuiteConfig(**(raw | overrides))


@pytest.fixture(scope="module")
def measurement(bundled_backend, tmp_path_factory):
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
    return BENCHMARK_SUITE.measure(
        load_config(limit=LIMIT), bundled_backend, tmp_path_factory.mktemp("bench")
    )


def test_lm_eval_per_sample_rows(measurement):
    for task in ("tinyk2_mcq", "tinyk2_arith"):
        rows = [r for r in measurement.samples if r["task"] == task]
        assert [r["doc_id"] for r in rows] == list(range(LIMIT))
        assert all(isinstance(r["correct"], bool) for r in rows)
    metrics = {m.name: m for m in measurement.metrics}
    mcq = metrics["tinyk2_mcq/acc"]
    assert mcq.n == LIMIT and mcq.direction == "higher" and mcq.stderr is not None
    hits = sum(r["correct"] for r in measurement.samples if r["task"] == "tinyk2_mcq")
    assert mcq.value == hits / LIMIT
    # lm-eval's own aggregate agrees with the per-sample rows
    assert measurement.extra["lm_eval_results"]["tinyk2_mcq"]["acc,none"] == pytest.approx(mcq.value)
    arith = metrics["tinyk2_arith/exact_match"]
    assert measurement.extra["lm_eval_results"]["tinyk2_arith"]["exact_match,strip"] == pytest.approx(
        arith.value
    )
    assert "wall_s" not in measurement.extra  # summary.json carries no timings: same inputs, same bytes
    print("benchmark suite:", {k: round(m.value, 3) for k, m in metrics.items()})


def test_baseline_against_itself_has_no_flips(measurement):
    compared = {m.name: m.value for m in BENCHMARK_SUITE.compare(load_config(), measurement, measurement)}
    for task in ("tinyk2_mcq/acc", "tinyk2_arith/exact_match"):
        assert compared[f"{task}_lost"] == 0 and compared[f"{task}_gained"] == 0
        assert compared[f"{task}_mcnemar_p"] == 1.0 and compared[f"{task}_delta"] == 0.0



def test_continuous_item_measures(measurement, bundled_backend):
    mcq = [r for r in measurement.samples if r["task"] == "tinyk2_mcq"]
    assert all(r["correct"] == (r["margin"] > 0) for r in mcq)  # acc is argmax of the same log-likelihoods
    assert all(r["gold_logprob"] < 0 for r in mcq)
    arith = [r for r in measurement.samples if r["task"] == "tinyk2_arith"]
    # the gold answer's teacher-forced NLL is the backend's log-likelihood of " <answer>" after the prompt
    docs = [__import__("json").loads(line) for line in open(shipped_root() / "data/tinyk2/arithmetic.jsonl")]
    context = bundled_backend.tokenize(docs[0]["question"], add_bos=True)
    whole = bundled_backend.tokenize(docs[0]["question"] + " " + docs[0]["answer"], add_bos=True)
    [(logprob, _)] = bundled_backend.loglikelihood([(context, whole[len(context):])])
    assert arith[0]["gold_nll"] == pytest.approx(-logprob, rel=1e-3)
    compared = {m.name: m for m in BENCHMARK_SUITE.compare(load_config(), measurement, measurement)}
    for name in ("tinyk2_mcq/margin", "tinyk2_mcq/gold_logprob", "tinyk2_arith/gold_nll"):
        assert compared[f"{name}_delta"].value == 0.0 and compared[f"{name}_ttest_p"].value == 1.0
    assert compared["tinyk2_arith/gold_nll_delta"].direction == "lower"
