"""Every input in the key: a change to any file a result depends on recomputes it, never reuses it.

The must-show case runs `quantgate eval` for real: a benchmark task's answers change between two
runs; the cached baseline is recomputed and the gate follows the new data (a stale baseline would
compare the variant's new accuracy with the old one and fail it). The other inputs (suite data, task
YAML, tokenizer, chat template, generation config, `.bin` weights, weights) are changed one at a
time and each must change the baseline cache key and the nightly's result key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cache import cache_key
from harness.suites.loader import load_suite
from quantgate.core.checkpoint import checkpoint_identity
from quantgate.core.shipped import shipped_root
from quantgate.nightly.store import pair_key
from tests.adversarial.conftest import dead_pid

SETTINGS = {"backend": "hf", "device": "cpu", "dtype": "float32", "threads": 2}
PLAN = """\
version: 1
name: stale
model: {model}
variants:
  - {{name: copy, scheme: w4a16-g128, method: rtn, group: g, checkpoint: copy}}
suites: [bench]
gates:
  - {{metric: bench.tinyk2_mcq/acc, max_difference: 0.05}}
"""


@pytest.fixture
def task_folder(tmp_path: Path) -> Path:
    """A private copy of the shipped mcq task, its data file beside it."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    shutil.copy(shipped_root() / "data" / "tinyk2" / "mcq.jsonl", folder / "mcq.jsonl")
    task = (shipped_root() / "lmeval" / "tinyk2_mcq.yaml").read_text()
    (folder / "tinyk2_mcq.yaml").write_text(task.replace("../data/tinyk2/mcq.jsonl", "mcq.jsonl"))
    return folder


def bench_suite(tmp_path: Path, task_folder: Path, limit: int = 12) -> Path:
    suite = tmp_path / "bench.yaml"
    suite.write_text(
        f"kind: benchmark\nversion: 1\ntasks: [{{name: tinyk2_mcq, metric: acc}}]\n"
        f"include_path: {task_folder}\nlimit: {limit}\nbatch_size: 12\n"
    )
    return suite


def change_every_answer(data: Path) -> None:
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps(r | {"answer": (r["answer"] + 1) % len(r["choices"])}) + "\n" for r in rows))


def test_changed_task_answers_recompute_the_baseline_and_the_gate_follows(
    run_cli, bundled_model, task_folder, tmp_path, capsys
):
    variant = tmp_path / "copy"  # the baseline's weights: a correct comparison shows no change at all
    shutil.copytree(bundled_model, variant)
    suite, out, cache = bench_suite(tmp_path, task_folder), tmp_path / "results", tmp_path / "cache"
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(model=bundled_model))
    argv = ["eval", "--model", variant, "--baseline", bundled_model, "--suite", suite, "--out", out,
            "--cache-dir", cache, "--threads", "2"]  # fmt: skip

    def accuracy(checkpoint: str) -> float:
        summary = json.loads((out / checkpoint / "bench" / "summary.json").read_text())
        return next(m["value"] for m in summary["metrics"] if m["name"] == "tinyk2_mcq/acc")

    killed = cache / f".benchmark-0123.tmp-{dead_pid()}"  # an entry a killed eval left half-written
    killed.mkdir(parents=True)
    assert run_cli(argv).code == 0
    assert not killed.exists()
    before = accuracy(bundled_model.name)
    assert run_cli(["gate", "--results", out, "--plan", plan]).code == 0

    change_every_answer(task_folder / "mcq.jsonl")
    assert run_cli(argv).code == 0
    timings = json.loads((out / bundled_model.name / "bench" / "timings.json").read_text())
    assert timings["baseline_cache"] == "miss"  # recomputed, not reused
    assert accuracy(bundled_model.name) == accuracy("copy") != before
    assert len(list(cache.iterdir())) == 2  # one entry per version of the data
    gate = run_cli(["gate", "--results", out, "--plan", plan])
    assert gate.code == 0, gate.out  # against a stale baseline the copy would lose accuracy and fail
    with capsys.disabled():  # shown with -s: the numbers behind the verdict
        print(f"\nbaseline tinyk2_mcq/acc {before:.3f} -> {accuracy(bundled_model.name):.3f} (recomputed)\n{gate.out}")


def _keys(model: Path, suite: Path) -> tuple[str, str]:
    config = load_suite(suite)
    identity = checkpoint_identity(model)
    return cache_key(identity, config, SETTINGS)[0], pair_key(identity, identity, config, SETTINGS)


def _edit(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\n")


CHECKPOINT_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                    "config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json"]  # fmt: skip


@pytest.mark.parametrize("changed", [*CHECKPOINT_FILES, "pytorch_model.bin (added)"])
def test_every_checkpoint_file_is_in_the_key(source, task_folder, tmp_path, changed):
    suite = bench_suite(tmp_path, task_folder)
    before = _keys(source, suite)
    if changed.endswith("(added)"):
        (source / changed.split()[0]).write_bytes(b"not loaded, still part of the checkpoint")
    else:
        _edit(source / changed)
    after = _keys(source, suite)
    assert after[0] != before[0] and after[1] != before[1]


@pytest.mark.parametrize("changed", ["task yaml", "task data", "another task file"])
def test_every_task_file_is_in_the_key(source, task_folder, tmp_path, changed):
    suite = bench_suite(tmp_path, task_folder)
    before = _keys(source, suite)
    target = {"task yaml": "tinyk2_mcq.yaml", "task data": "mcq.jsonl", "another task file": "utils.py"}[changed]
    if (task_folder / target).exists():
        _edit(task_folder / target)
    else:
        (task_folder / target).write_text("# read by an include or a trusted !function\n")
    after = _keys(source, suite)
    assert after[0] != before[0] and after[1] != before[1]


def test_suite_data_is_in_the_key(source, tmp_path):
    data = tmp_path / "text.jsonl"
    shutil.copy(shipped_root() / "data" / "tinyk2" / "heldout_text.jsonl", data)
    suite = tmp_path / "ppl.yaml"
    suite.write_text(
        f"kind: perplexity\nversion: 1\ndata: {data}\ncontext_length: 48\nstride: 48\ntop_k: 16\nbatch_size: 8\n"
    )
    before = _keys(source, suite)
    _edit(data)
    assert _keys(source, suite) != before
