"""kill -9 in the middle of quantize: the rerun removes the dead run's temporary folder and writes a
checkpoint byte-identical to an uninterrupted build (the nightly's kill and resume is in
tests/quantgate/nightly/test_nightly.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from quantgate.core.manifest import load_manifest

KILL_DEADLINE_S = 120


def test_quantize_killed_mid_write_reruns_byte_identical(run_cli, bundled_model: Path, tmp_path: Path):
    out = tmp_path / "killed" / "out"
    out.parent.mkdir()
    argv = ["quantize", "--model", bundled_model, "--scheme", "w4a16-g128", "--out", out, "--workers", "1"]
    child = subprocess.Popen([sys.executable, "-m", "quantgate", *map(str, argv)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    scratch = out.parent / f".out.tmp-{child.pid}"
    deadline = time.monotonic() + KILL_DEADLINE_S
    while not any(scratch.glob("*.safetensors")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert scratch.exists() and not out.exists(), "killed too late: nothing was left half-written"

    assert run_cli(argv).code == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # the dead run's folder is gone
    clean = tmp_path / "clean" / "out"
    assert run_cli([*argv[:-3], clean, "--workers", "1"]).code == 0
    assert load_manifest(out).files == load_manifest(clean).files
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes() for p in clean.iterdir()}


UPLOAD_VARIANTS = 8  # enough runs and files that an upload takes seconds: room to kill it midway
SAMPLE_ROWS = 400


def _big_record(tmp_path: Path):
    """A nightly record of UPLOAD_VARIANTS variants on two suites, each with a samples file."""
    from quantgate.core.metrics import Metric
    from quantgate.core.record import ResultRecord, write_record
    from quantgate.plan import Plan
    from quantgate.tracking.nightly_record import nightly_record

    plan = Plan.model_validate({
        "version": 1, "name": "killed-upload", "model": "models/tiny", "suites": ["perplexity", "benchmark"],
        "variants": [{"name": f"v{i}", "scheme": "w4a16-g128", "method": "rtn", "group": "int4",
                      "checkpoint": f"tiny-v{i}"} for i in range(UPLOAD_VARIANTS)],
        "gates": [{"metric": "perplexity.perplexity", "min_recovery": 90}],
    })  # fmt: skip
    results = []
    for index, checkpoint in enumerate(["tiny"] + [f"tiny-v{i}" for i in range(UPLOAD_VARIANTS)]):
        role = "baseline" if index == 0 else "variant"
        for suite, metric in (("perplexity", Metric("perplexity", 10 + index / 100, "lower", 0.05, n=9)),
                              ("benchmark", Metric("acc", 0.8 - index / 100, "higher", 0.02, n=9))):  # fmt: skip
            folder = tmp_path / "results" / checkpoint / suite
            folder.mkdir(parents=True)
            record = ResultRecord.of(checkpoint, suite, 1, [metric], [] if index == 0 else None, role)
            write_record(folder, record)
            (folder / "samples.jsonl").write_text("".join(f'{{"id": {i}, "nll": 2.5}}\n' for i in range(SAMPLE_ROWS)))
            results.append(record.at(folder))
    return nightly_record(plan, results, "n-killed-upload", "pass", passing=[v.name for v in plan.variants])


def _sync(url: str, state: Path) -> subprocess.Popen:
    env = os.environ | {"QUANTGATE_STATE_DIR": str(state), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    return subprocess.Popen([sys.executable, "-m", "quantgate", "sync", "--tracking-uri", url], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _wait_for_runs(url: str, at_least: int, child: subprocess.Popen) -> int:
    """Poll the server until the upload has made `at_least` runs; returns how many it found."""
    from mlflow import MlflowClient

    client, deadline = MlflowClient(tracking_uri=url), time.monotonic() + KILL_DEADLINE_S
    while time.monotonic() < deadline and child.poll() is None:
        experiment = client.get_experiment_by_name("quantgate/killed-upload")
        found = len(client.search_runs([experiment.experiment_id])) if experiment else 0
        if found >= at_least:
            return found
        time.sleep(0.05)
    return -1


def test_upload_survives_the_server_killed_and_sync_killed_midway(tmp_path: Path):
    """kill -9 of the real mlflow server mid-upload: sync exits 1 and keeps the entry; kill -9 of sync
    itself mid-upload: the entry stays; the next sync completes it with no duplicate run or point."""
    from mlflow import MlflowClient

    from quantgate.tracking import names, outbox
    from tests.conftest import MlflowServer, free_port

    state = tmp_path / "state"
    entry = outbox.put(_big_record(tmp_path), state)  # as a nightly whose server was down leaves it
    server = MlflowServer(tmp_path / "server", free_port())
    server.root.mkdir()
    server.start()
    try:
        sync = _sync(server.url, state)
        assert _wait_for_runs(server.url, 2, sync) > 0, "the upload finished before the server could be killed"
        server.kill()
        output = sync.communicate(timeout=KILL_DEADLINE_S)[0]
        assert sync.returncode == 1 and outbox.pending(state) == [entry], output[-2000:]

        server.start()  # back, on the same store
        sync = _sync(server.url, state)
        assert _wait_for_runs(server.url, 4, sync) > 0, "the upload finished before sync could be killed"
        sync.kill()  # kill -9
        sync.wait()
        assert outbox.pending(state) == [entry]

        finished = _sync(server.url, state)
        output = finished.communicate(timeout=KILL_DEADLINE_S)[0]
        assert finished.returncode == 0 and outbox.pending(state) == [], output[-2000:]
        client = MlflowClient(tracking_uri=server.url)
        experiment = client.get_experiment_by_name("quantgate/killed-upload")
        runs = client.search_runs([experiment.experiment_id])
        kinds = sorted(r.data.tags[names.TAG_KIND] for r in runs)
        assert kinds == sorted(["nightly"] + ["trend", "variant"] * (UPLOAD_VARIANTS + 1))  # no duplicate run
        for run in runs:
            if run.data.tags[names.TAG_KIND] == "variant":
                assert len(client.get_metric_history(run.info.run_id, "perplexity.perplexity")) == 1
                assert run.data.tags[names.suite_logged_tag("benchmark")] == "true"
    finally:
        server.stop()


EVAL_SUITE = """\
kind: perplexity
version: 1
data: {data}
context_length: 64
stride: 64
top_k: 8
batch_size: 1
max_documents: 6
"""


def test_eval_killed_mid_measure_reruns_identical(run_cli, bundled_model: Path, tmp_path: Path):
    """kill -9 while the variant is being measured (its result folder staged, not renamed): the rerun
    leaves no staging folder and writes the same bytes as an uninterrupted eval."""
    from quantgate.core.shipped import shipped_root

    suite = tmp_path / "ppl.yaml"
    suite.write_text(EVAL_SUITE.format(data=shipped_root() / "data" / "tinyk2" / "heldout_text.jsonl"))
    variant = tmp_path / "int4"
    quantize = ["quantize", "--model", bundled_model, "--scheme", "kimi-k2-thinking-int4", "--out", variant]
    assert run_cli(quantize).code == 0

    def argv(out: Path) -> list:
        return ["eval", "--model", variant, "--baseline", bundled_model, "--suite", suite, "--out", out,
                "--cache-dir", tmp_path / "cache", "--threads", "1"]  # fmt: skip

    out = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-m", "quantgate", *map(str, argv(out))], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    staged = out / variant.name / ".ppl.tmp"
    deadline = time.monotonic() + KILL_DEADLINE_S
    while not staged.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert staged.exists() and not (out / variant.name / "ppl").exists(), "killed too late"

    assert run_cli(argv(out)).code == 0
    assert not list(out.rglob(".*.tmp*")) and not list((tmp_path / "cache").rglob(".*.tmp*"))
    assert run_cli(argv(tmp_path / "clean")).code == 0
    for name in ("summary.json", "samples.jsonl"):
        for model in (bundled_model.name, variant.name):
            assert (out / model / "ppl" / name).read_bytes() == (tmp_path / "clean" / model / "ppl" / name).read_bytes()
