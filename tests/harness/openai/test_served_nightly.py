"""A plan in serve mode: the nightly itself starts a vLLM CPU server for the baseline and for a dequantized
int4 variant in turn, measures through them (KL against the served baseline's top-k log-probabilities),
stops each by PID, and keeps each server's log with the results. The variant's server is killed while its
suite runs: the nightly reports it with the log's last lines (exit 3), keeps the baseline's finished pair,
and a rerun measures only the variant and reaches a verdict. No server is left running."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from harness.backends.openai import OpenAIBackend
from quant.dequantize import dequantize_checkpoint
from quantgate.cli import main

HELDOUT = Path(__file__).resolve().parents[3] / "suites" / "data" / "tinyk2" / "heldout_text.jsonl"


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # any process left in the server's process group
    except ProcessLookupError:
        return False
    return True


def test_serve_mode_runs_to_a_verdict_and_resumes_after_a_server_dies(
    vllm_python, bundled_model, variant_dir, tmp_path, monkeypatch, capsys
):
    for name, value in {"QUANTGATE_STATE_DIR": tmp_path / "state", "QUANTGATE_CACHE": tmp_path / "cache"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    int4 = dequantize_checkpoint(variant_dir("kimi-k2-thinking-int4"), tmp_path / "int4-dequantized")
    (tmp_path / "ppl.yaml").write_text(
        f"kind: perplexity\nversion: 1\ndata: {HELDOUT}\ncontext_length: 48\nstride: 48\ntop_k: 16\n"
        "batch_size: 8\nmax_documents: 4\n"
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"version: 1\nname: served\nmodel: {bundled_model}\n"
        f"variants:\n  - {{name: int4, group: int4, path: {int4}}}\n"
        "suites: [ppl.yaml]\n"
        f"serve: {{device: cpu, dtype: float32, python: {vllm_python}, max_logprobs: 16, concurrency: 4, "
        f"env: {{OMP_NUM_THREADS: '{os.environ.get('QUANTGATE_VLLM_THREADS', '2')}'}}}}\n"
        "gates:\n  - {metric: ppl.kl_mean, max_value: 0.004}\n"  # int4 experts, as plans/nightly.yaml gates them
    )
    servers = tmp_path / "state" / "servers"
    pids: list[int] = []
    score_windows = OpenAIBackend.score_windows

    def kill_the_variant_server_once(self, windows, top_k):  # the variant's server dies mid-suite
        if self.endpoint.model == "int4" and not pids:
            pids.append(int((servers / "int4" / "server.pid").read_text()))
            os.killpg(pids[0], signal.SIGKILL)
        return score_windows(self, windows, top_k)

    monkeypatch.setattr(OpenAIBackend, "score_windows", kill_the_variant_server_once)
    argv = ["nightly", "--plan", str(plan), "--reports", str(tmp_path / "reports"), "--nightly-id", "s1"]
    assert main(argv) == 3
    out = capsys.readouterr().out
    with capsys.disabled():
        print(out)
    assert "eval kimi-k2-tiny × ppl: measured" in out
    failure = next(line for line in out.splitlines() if line.startswith("not measured: "))
    assert failure.startswith("not measured: int4: server died while its suites ran (exit status -9): EndpointError")
    assert "INFO" in out.split(failure, 1)[1]  # the last lines of the server's log follow
    assert "nightly incomplete: 1 checkpoint(s) not measured" in out

    monkeypatch.setattr(OpenAIBackend, "score_windows", score_windows)
    assert main(argv) == 0  # the rerun: the baseline's pair is kept, only the variant is measured
    out = capsys.readouterr().out
    with capsys.disabled():
        print(out)
    assert "eval kimi-k2-tiny × ppl: reused" in out and "eval int4 × ppl: measured" in out
    assert "int4 passes all 1 gate(s)" in out and "verdict: PASS" in out
    assert "server kimi-k2-tiny:" not in out  # no server for a checkpoint with nothing left to measure

    pids += [json.loads((servers / name / "server.json").read_text())["pid"] for name in ("kimi-k2-tiny", "int4")]
    assert len(set(pids)) == 3 and not any(_alive(pid) for pid in pids)  # every server stopped, by its PID
    assert not list(servers.glob("*/server.pid"))
    results = tmp_path / "state" / "results"
    for checkpoint in ("kimi-k2-tiny", "int4"):
        [folder] = (results / checkpoint / "ppl").iterdir()  # the suite's name, not its file
        assert "Application startup complete" in (folder / "server.log").read_text()
        served = json.loads((folder / "server.json").read_text())
        assert served["engine"] == "vllm" and "--served-model-name " + checkpoint in served["command"]
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["model"]["served_model"] == checkpoint
    assert "top-16 log-probabilities per token from vllm" in served["logprobs"]
    kl = next(m for m in summary["comparison"] if m["name"] == "kl_mean")["value"]
    with capsys.disabled():
        print(f"int4 (dequantized) against BF16, both served by vLLM CPU: kl_mean {kl:.6f}")
    assert 0 < kl < 0.004
