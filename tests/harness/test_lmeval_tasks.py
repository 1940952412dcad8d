"""`quantgate eval --tasks` as lm-eval's users know it: a local group of two tasks scored exactly as
`lm_eval` scores it on the same model, flips per subtask, and a metric/filter pair or a group that
cannot be scored is a one-line error (exit 2) naming what the task has, never a 0.0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.suites.base import Measurement
from harness.suites.benchmark import BENCHMARK_SUITE, BenchmarkSuiteConfig
from quantgate.cli import main
from quantgate.core.metrics import Metric

ROOT = Path(__file__).resolve().parents[2]
LOCAL_TASKS = ROOT / "suites" / "lmeval"
LIMIT = 20


@pytest.fixture(scope="module")
def tasks_run(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tasks")
    argv = ["eval", "--model", str(bundled_model), "--tasks", "tinyk2_mc", "--limit", str(LIMIT), "--out", str(out)]
    assert main(argv + ["--batch-size", "8"]) == 0
    return out / bundled_model.name / "lm_eval"


def test_a_local_group_equals_lm_eval_on_the_same_model_and_tasks(tasks_run, bundled_model, monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    summary = json.loads((tasks_run / "summary.json").read_text())
    ours = {m["name"]: m["value"] for m in summary["metrics"]}
    monkeypatch.chdir(LOCAL_TASKS)  # lm-eval reads the tasks' relative data_files from the working directory
    theirs = simple_evaluate(  # lm-eval loading the model itself, as `lm_eval --model hf` does
        model="hf",
        model_args=f"pretrained={bundled_model},dtype=float32",
        device="cpu",
        batch_size=8,
        tasks=["tinyk2_mc"],
        task_manager=TaskManager(include_path=str(LOCAL_TASKS), include_defaults=False),
        limit=LIMIT,
        bootstrap_iters=0,
    )["results"]
    lm_eval = {f"{name}/acc": theirs[name]["acc,none"] for name in ("tinyk2_mc", "tinyk2_mcq", "tinyk2_arith_mc")}
    print("quantgate eval --tasks tinyk2_mc:", ours)
    print("lm_eval --tasks tinyk2_mc:      ", lm_eval)
    assert ours == pytest.approx(lm_eval, abs=1e-12)
    assert 0 < ours["tinyk2_mc/acc"] < 1  # a real score, not an empty 0.0
    rows = [json.loads(line) for line in (tasks_run / "samples.jsonl").read_text().splitlines()]
    assert {(r["task"], r["group"], r["metric"], r["filter"]) for r in rows} == {
        ("tinyk2_mcq", "tinyk2_mc", "acc", "none"),
        ("tinyk2_arith_mc", "tinyk2_mc", "acc", "none"),
    }


def test_flips_are_counted_per_subtask(tasks_run):
    summary = json.loads((tasks_run / "summary.json").read_text())
    rows = [json.loads(line) for line in (tasks_run / "samples.jsonl").read_text().splitlines()]
    baseline = Measurement([Metric(**m) for m in summary["metrics"]], rows, tasks_run)
    flipped = [r | {"correct": not r["correct"]} if r["doc_id"] == 0 else r for r in rows]
    variant = Measurement([Metric(**m) for m in summary["metrics"]], flipped, tasks_run)
    config = BenchmarkSuiteConfig.model_validate(summary["suite"])
    compared = {m.name: m.value for m in BENCHMARK_SUITE.compare(config, variant, baseline)}
    for task in ("tinyk2_mcq", "tinyk2_arith_mc"):  # one flipped document in each subtask
        assert compared[f"{task}/acc_lost"] + compared[f"{task}/acc_gained"] == 1
    assert compared["tinyk2_mc/acc_delta"] == 0.0  # the same aggregates in both measurements
    assert "tinyk2_mc/acc_lost" not in compared  # the group's flips are its subtasks'


def _eval_suite(tmp_path: Path, bundled_model: Path, suite: str, capsys) -> tuple[int, str]:
    (tmp_path / "bench.yaml").write_text(suite)
    suite_file = tmp_path / "bench.yaml"
    status = main(["eval", "--model", str(bundled_model), "--suite", str(suite_file), "--out", str(tmp_path / "o")])
    return status, capsys.readouterr().err.strip().splitlines()[-1]


def test_a_filter_the_task_lacks_exits_2_naming_its_filters(bundled_model, tmp_path, capsys):
    suite = "kind: benchmark\nversion: 1\nlimit: 2\ntasks:\n  - {name: tinyk2_arith, filter: none}\n"
    status, error = _eval_suite(tmp_path, bundled_model, suite, capsys)
    assert status == 2
    assert error == (
        "quantgate: error: tasks: task tinyk2_arith: filter 'none' yields no samples; "
        "it has: metric exact_match with filter strip"
    )
    assert not (tmp_path / "o" / bundled_model.name / "bench").exists()


def test_a_group_without_aggregation_exits_2_listing_its_tasks(bundled_model, tmp_path, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name in ("tinyk2_mcq", "tinyk2_arith_mc"):  # the shipped tasks, their data one folder up as shipped
        (tasks / f"{name}.yaml").write_text(
            (LOCAL_TASKS / f"{name}.yaml").read_text().replace("../data/", f"{LOCAL_TASKS.parent}/data/")
        )
    (tasks / "plain.yaml").write_text("group: plain\ntask: [tinyk2_mcq, tinyk2_arith_mc]\n")
    suite = f"kind: benchmark\nversion: 1\nlimit: 2\ninclude_path: {tasks}\ntasks: [plain]\n"
    status, error = _eval_suite(tmp_path, bundled_model, suite, capsys)
    assert status == 2
    assert error.startswith("quantgate: error: tasks: group plain cannot be aggregated")
    assert error.endswith("its tasks: tinyk2_mcq, tinyk2_arith_mc; list them instead")


def test_lm_eval_flags_are_typed_suite_fields(bundled_model, tmp_path, capsys):
    status, error = _eval_suite(
        tmp_path, bundled_model, "kind: benchmark\nversion: 1\ntasks: [tinyk2_mcq]\nnum_fewshots: 2\n", capsys
    )
    assert status == 2 and "num_fewshots" in error and "num_fewshot" in error
    argv = ["eval", "--model", str(bundled_model), "--suite", "benchmark", "--limit", "3", "--out", str(tmp_path)]
    assert main(argv) == 2
    needs_tasks = "quantgate: error: --limit needs --tasks (a suite file sets it as a field)"
    assert capsys.readouterr().err.strip() == needs_tasks


def test_simple_evaluate_runs_without_its_environment_probe(tmp_path, monkeypatch, capfd) -> None:
    """lm-eval's git and `pip list` probes are skipped (seconds per run, and git's "fatal: not a git
    repository" outside a checkout); the probe functions are restored afterwards."""
    import lm_eval.evaluator as evaluator

    from harness.suites.lmeval_tasks import without_environment_probe

    monkeypatch.chdir(tmp_path)  # not a git checkout
    original = evaluator.add_env_info
    storage: dict = {}
    with without_environment_probe():
        assert evaluator.get_git_commit_hash() is None
        evaluator.add_env_info(storage)
    assert set(storage) == {"lm_eval_version", "transformers_version"}
    assert evaluator.add_env_info is original
    assert "fatal" not in capfd.readouterr().err
