"""`quantgate drill`'s backend condition on a real vLLM CPU server: a plan with `serve:` drills the baseline
copy through a fresh server per run against the baseline served the same way (its history gates against
the copy served once before), reported beside a deterministic in-process condition with its own rate; tool
calls in raw mode give the call-step KL through the server; every server is stopped. A missing vLLM
environment is a one-line input error (exit 2) before anything is measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from quantgate.cli import main
from quantgate.core.record import read_results
from quantgate.gates.history import fingerprint

ROOT = Path(__file__).resolve().parents[3]
HELDOUT = ROOT / "suites" / "data" / "tinyk2" / "heldout_text.jsonl"
SUITE = f"kind: perplexity\nversion: 1\ndata: {HELDOUT}\ncontext_length: 48\nstride: 48\ntop_k: 16\nbatch_size: 4\n"
SCENARIOS = ROOT / "suites" / "data" / "tinyk2" / "toolcall_scenarios.jsonl"
TOOLCALL = f"kind: toolcall\nversion: 1\nscenarios_file: {SCENARIOS}\nlimit: 2\n"
PLAN = """\
version: 1
name: drill-served
model: {model}
variants:
  - {{name: int4, scheme: kimi-k2-thinking-int4, method: rtn, group: int4}}
suites: [ppl.yaml{more}]
{serve}gates:
  - {{metric: ppl.perplexity, min_recovery: 99.5}}
  - {{metric: ppl.kl_mean, max_value: 0.004, history: {{}}}}
  - {{metric: ppl.same_top1, min_value: 97.5}}
"""


def _plan(tmp_path: Path, model: Path, serve: str = "", toolcall: bool = False) -> Path:
    (tmp_path / "ppl.yaml").write_text(SUITE + "max_documents: 4\n")
    (tmp_path / "calls.yaml").write_text(TOOLCALL)
    gates = "  - {metric: calls.call_kl_mean, max_value: 0.002}\n" if toolcall else ""
    plan = PLAN.format(model=model, serve=serve, more=", calls.yaml" if toolcall else "") + gates
    (tmp_path / "plan.yaml").write_text(plan)
    return tmp_path / "plan.yaml"


def test_drill_measures_the_copy_through_vllm_against_the_served_baseline(
    vllm_python: Path, bundled_model: Path, tmp_path: Path, capsys
) -> None:
    threads = os.environ.get("QUANTGATE_VLLM_THREADS", "2")
    serve = (f"serve: {{device: cpu, dtype: float32, python: {vllm_python}, max_logprobs: 64, concurrency: 4, "
             f"toolcall_mode: raw, env: {{OMP_NUM_THREADS: '{threads}'}}}}\n")  # fmt: skip
    out, plan = tmp_path / "drill", _plan(tmp_path, bundled_model, serve, toolcall=True)
    conditions = ["--condition", "repeat", "--condition", "backend=vllm"]  # threads, batch: tests/quantgate/nightly
    status = main(["drill", "--plan", str(plan), "--threads", "2", *conditions, "--out", str(out)])
    printed = capsys.readouterr().out
    with capsys.disabled():
        print(printed)
    header = "| metric | gate | repeat | backend=vllm | false-alarm rate |"
    assert header + " nondeterministic rate (target <= 5 %) |" in printed
    written = json.loads((out / "drill.json").read_text())
    assert written["nondeterministic"] == ["backend=vllm"]
    verdicts = {(g["metric"], g["gate"]): g["verdicts"] for g in written["gates"]}
    assert set(verdicts) == {("ppl.perplexity", "min_recovery 99.5"), ("ppl.kl_mean", "max_value 0.004"),
                             ("ppl.kl_mean", "history p<0.05"), ("ppl.same_top1", "min_value 97.5"),
                             ("calls.call_kl_mean", "max_value 0.002")}  # fmt: skip
    assert all(len(v["backend=vllm"]) == 1 for v in verdicts.values())
    # the deterministic conditions raise none; the served copy against the served baseline passes the
    # absolute gates (the same model served twice)
    assert all(verdict == ["pass"] for v in verdicts.values() for c, verdict in v.items() if c != "backend=vllm")
    assert all(verdicts[key]["backend=vllm"] == ["pass"] for key in verdicts if key[1] != "history p<0.05")
    # tool calls in raw mode (the plan's serve.toolcall_mode): the call steps are scored teacher-forced
    assert verdicts["calls.call_kl_mean", "max_value 0.002"] == {"repeat": ["pass"], "backend=vllm": ["pass"]}
    # the history gate compares with the copy served once before: another server on another port, the same
    # identity (what it serves), so identical results or nondeterminism
    served = out / "backend=vllm"
    [reference] = [r for r in read_results(served / "served-reference") if r.role != "baseline" and r.suite == "ppl"]
    [copy] = [r for r in read_results(served / "0" / "drill") if r.suite == "ppl"]
    assert copy.model.identity == reference.model.identity and fingerprint(copy) == fingerprint(reference)
    history = verdicts["ppl.kl_mean", "history p<0.05"]["backend=vllm"]
    reasons = [r for a in written["false_alarms"] for r in a["reasons"]]
    assert status == (0 if history == ["pass"] else 1)
    assert all(r.startswith("backend=vllm: nondeterminism: same checkpoint") for r in reasons)
    servers = out / "backend=vllm" / "servers"
    for server in ("reference", "run-0"):  # one server for the baseline and the reference copy, one per run
        info = json.loads((servers / server / "server.json").read_text())
        assert "--served-model-name drill" in info["command"] and "--dtype float32" in info["command"]
        assert "Application startup complete" in (servers / server / "server.log").read_text()
    assert not list(servers.glob("*/server.pid"))  # every server stopped
    [baseline] = [json.loads(p.read_text()) for p in (out / "backend=vllm").glob("served-reference/*/ppl/summary.json")
                  if json.loads(p.read_text())["model"]["role"] == "baseline"]  # fmt: skip
    assert baseline["model"]["identity"].startswith("served:vllm:")


def test_drill_without_a_vllm_environment_is_an_input_error(bundled_model: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no-venv"
    serve = f"serve: {{device: cpu, python: {missing}/bin/python}}\n"
    assert main(["drill", "--plan", str(_plan(tmp_path, bundled_model, serve)), "--out", str(tmp_path / "d")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith(f"--backend vllm: no vllm environment at {missing}/bin/python (the plan's serve.python); "
                          "create it with bench/setup_vllm_cpu_venv.sh")  # fmt: skip
    assert not (tmp_path / "d").exists()  # nothing measured
    plan = _plan(tmp_path, bundled_model)  # no serve: the flag asks for it, the default venv is missing
    env = os.environ | {"QUANTGATE_VLLM_VENV": str(missing), "PYTHONPATH": f"{ROOT}:{ROOT / 'tools'}"}
    argv = [sys.executable, "-m", "quantgate", "drill", "--plan", str(plan), "--backend", "vllm",
            "--out", str(tmp_path / "d")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith(
        f"--backend vllm: no vllm environment at {missing}/bin/python ($QUANTGATE_VLLM_VENV or "
        "~/.cache/quantgate/vllm-cpu); create it with bench/setup_vllm_cpu_venv.sh"
    )
