"""The toolcall suite on the real bundled model: every scenario runs to completion, fast, and BF16
against itself agrees completely."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from harness.suites.base import suite_kind
from harness.suites.toolcall import TOOLCALL_SUITE, ToolcallSuiteConfig
from harness.toolcall import teacher
from harness.toolcall.k2vv import K2VV_RESULTS, read_results
from harness.toolcall.loop import detect_parser
from quantgate.core.shipped import shipped_root

OUTCOMES = {"answer", "malformed", "max_steps", "context_exceeded"}
SCENARIOS = 20  # the first 20 of the 60 held-out scenarios keep the test's generation cost bounded


def load_config(name: str, **overrides) -> ToolcallSuiteConfig:
    raw = yaml.safe_load((shipped_root() / f"{name}.yaml").read_text())
    return ToolcallSuiteConfig(**(raw | overrides))


@pytest.fixture(scope="module")
def measurement(bundled_backend, tmp_path_factory):
    return TOOLCALL_SUITE.measure(
        load_config("toolcall", limit=SCENARIOS), bundled_backend, tmp_path_factory.mktemp("toolcall")
    )


def test_every_scenario_runs_to_completion(measurement):
    rows = measurement.samples
    assert len(rows) == SCENARIOS and {r["source"] for r in rows} == {"scenario"}
    assert {r["outcome"] for r in rows} <= OUTCOMES
    assert all(1 <= r["steps"] <= 4 for r in rows)
    assert measurement.extra["parser"] == "kimi_k2"
    metrics = {m.name: m for m in measurement.metrics}
    for name in ("task_success", "schema_accuracy", "wrong_tool_rate", "malformed_rate", "tool_trigger_rate"):
        assert 0.0 <= metrics[name].value <= 1.0
    assert metrics["task_success"].direction == "higher" and metrics["task_success"].stderr is not None
    assert metrics["malformed_rate"].direction == "lower"
    print("toolcall suite:", measurement.extra, {m.name: round(m.value, 3) for m in measurement.metrics})


def test_baseline_against_itself(measurement):
    compared = {m.name: m for m in TOOLCALL_SUITE.compare(load_config("toolcall"), measurement, measurement)}
    assert compared["trigger_f1"].value == 1.0
    assert compared["task_success_lost"].value == 0 and compared["task_success_gained"].value == 0
    assert compared["task_success_mcnemar_p"].value == 1.0


def test_k2vv_requests_are_single_steps(bundled_backend, tmp_path):
    result = TOOLCALL_SUITE.measure(load_config("toolcall_k2vv", limit=8), bundled_backend, tmp_path)
    assert len(result.samples) == 8 and all(r["steps"] == 1 for r in result.samples)
    assert {r["outcome"] for r in result.samples} <= {"answer", "tool_calls", "malformed"}
    names = {m.name for m in result.metrics}
    assert {"schema_accuracy", "tool_trigger_rate"} <= names and "task_success" not in names
    assert {"k2vv_count_finish_reason_tool_calls", "k2vv_schema_accuracy", "dropped_rate"} <= names
    compared = {m.name: m.value for m in TOOLCALL_SUITE.compare(load_config("toolcall_k2vv"), result, result)}
    assert compared["trigger_f1"] == 1.0
    assert {"k2vv_tool_call_precision", "k2vv_tool_call_recall", "k2vv_tool_call_f1"} <= compared.keys()
    written = read_results(tmp_path / K2VV_RESULTS)
    assert sorted(written.finish_reasons) == list(range(1, 9)) and written.skipped == []
    (tmp_path / "against-reference").mkdir()
    scored = TOOLCALL_SUITE.measure(
        load_config("toolcall_k2vv", limit=8, reference_results=tmp_path / K2VV_RESULTS), bundled_backend,
        tmp_path / "against-reference",
    )
    against = {m.name: m for m in scored.metrics}
    assert against["k2vv_tool_call_f1"].n == 8
    assert against["k2vv_tool_call_f1"].value == compared["k2vv_tool_call_f1"]  # same model, same answers


def test_parser_detected_from_chat_template(bundled_backend):
    assert detect_parser(bundled_backend) == "kimi_k2"


def test_config_rejects_impossible_settings():
    assert suite_kind("toolcall") is TOOLCALL_SUITE
    with pytest.raises(ValidationError, match="greedy samples are identical"):
        load_config("toolcall", samples=4)
    with pytest.raises(ValidationError, match="known: auto, deepseek_v3, hermes, kimi_k2"):
        load_config("toolcall", parser="qwen")
    with pytest.raises(ValidationError, match="Extra inputs"):
        load_config("toolcall", temprature=0.7)
    with pytest.raises(ValidationError, match="scenarios_file, requests_file"):
        ToolcallSuiteConfig(name="t", kind="toolcall", version=1)


def test_sampled_episodes_report_pass_hat_k_reproducibly(bundled_backend, tmp_path):
    config = load_config("toolcall", limit=3, samples=2, temperature=1.0, seed=3)
    first = TOOLCALL_SUITE.measure(config, bundled_backend, tmp_path / "a")
    assert [(r["id"], r["sample"]) for r in first.samples] == [
        (s["id"], k) for s in first.samples[::2] for k in (0, 1)
    ]
    metrics = {m.name: m for m in first.metrics}
    assert 0.0 <= metrics["pass^2"].value <= metrics["task_success"].value <= 1.0
    assert metrics["pass^2"].n == 3 and metrics["task_success"].n == 6
    again = TOOLCALL_SUITE.measure(config, bundled_backend, tmp_path / "b")
    assert again.samples == first.samples  # same seed, same episodes


def test_call_steps_teacher_forced_along_the_baselines_trajectory(measurement, backend, tmp_path):
    steps = measurement.extra["call_steps"]
    calls = sum(len({c["step"] for c in r["calls"]}) for r in measurement.samples)
    assert steps == calls > 0 and measurement.extra["call_on_record"] == steps  # greedy turns reproduce
    itself = teacher.measure_variant(backend("bf16"), measurement.out_dir, False, tmp_path / "self")
    assert all(r["agree"] and r["kl_mean"] == 0 and r["nll_mean"] == r["baseline_nll_mean"] for r in itself)
    same = {m.name: m.value for m in teacher.call_metrics(itself)}
    assert (same["call_kl_mean"], same["call_agreement"], same["call_nll_delta"], same["call_nll_ttest_p"]) == (
        0.0, 1.0, 0.0, 1.0)
    rows = teacher.measure_variant(backend("w2a16-g32"), measurement.out_dir, False, tmp_path / "w2")
    assert [r["step"] for r in rows] == [r["step"] for r in itself]
    assert (tmp_path / "w2" / teacher.ROWS).read_text().count("\n") == steps
    w2 = {m.name: m for m in teacher.call_metrics(rows)}
    assert w2["call_kl_mean"].value > 0 and w2["call_kl_mean"].direction == "lower"
    assert w2["call_nll_delta_low"].value <= w2["call_nll_delta"].value <= w2["call_nll_delta_high"].value
    print("toolcall call steps, w2a16-g32:", {k: round(m.value, 5) for k, m in w2.items()})
