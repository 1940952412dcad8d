"""`quantgate drill` on the bundled model: the baseline against itself under repeat, another thread count
and batch 1 raises no false alarm on the deterministic CPU backend, and the table is printed and written; a
latency suite is timed beside itself under repeat only, judged by candidate speedup gates, without history."""

from __future__ import annotations

import json
from pathlib import Path

from quantgate.cli import main

SUITE = """\
kind: perplexity
version: 1
data: {data}
context_length: 64
stride: 64
top_k: 16
batch_size: 4
max_documents: 4
"""
PLAN = """\
version: 1
name: drill-test
model: {model}
variants:
  - {{name: int4, scheme: kimi-k2-thinking-int4, method: rtn, group: int4}}
suites: [ppl.yaml]
gates:
  - {{metric: ppl.perplexity, groups: [int4], min_recovery: 99.5}}
  - {{metric: ppl.kl_mean, max_value: 0.004, history: {{}}}}
  - {{metric: ppl.same_top1, min_value: 97.5}}
"""


def test_drill_reports_each_gate_false_alarm_rate(bundled_model: Path, tmp_path: Path, capsys) -> None:
    data = bundled_model.parents[1] / "suites" / "data" / "tinyk2" / "heldout_text.jsonl"
    (tmp_path / "ppl.yaml").write_text(SUITE.format(data=data))
    (tmp_path / "plan.yaml").write_text(PLAN.format(model=bundled_model))
    out = tmp_path / "drill"
    args = ["drill", "--plan", str(tmp_path / "plan.yaml"), "--threads", "2", "--out", str(out)]
    assert main(args) == 0  # no false alarm
    printed = capsys.readouterr().out
    assert "| metric | gate | repeat | threads=1 | batch=1 | false-alarm rate |" in printed
    assert "| ppl.kl_mean | history p<0.05 | 0/1 | 0/1 | 0/1 | 0% |" in printed
    assert "false alarms: 0" in printed
    written = json.loads((out / "drill.json").read_text())
    assert written["conditions"] == ["repeat", "threads=1", "batch=1"] and written["false_alarms"] == []
    assert {(g["metric"], g["gate"]) for g in written["gates"]} == {
        ("ppl.perplexity", "min_recovery 99.5"), ("ppl.kl_mean", "max_value 0.004"), ("ppl.kl_mean", "history p<0.05"),
        ("ppl.same_top1", "min_value 97.5"),
    }  # fmt: skip
    assert "No false alarm." in (out / "drill.md").read_text()


def test_drill_refuses_zero_runs(tmp_path: Path, capsys) -> None:
    assert main(["drill", "--plan", str(tmp_path / "plan.yaml"), "--runs", "0"]) == 2
    assert capsys.readouterr().err.strip().endswith("--runs must be at least 1, got 0")


LATENCY = """\
kind: latency
version: 3
batch_sizes: [1]
prompt_lengths: [16]
decode_tokens: 2
warmup: 1
repeats: 3
max_cv: {max_cv}  # 1000: never unstable; 1e-9 (no retry): always unstable, as on a busy runner
retries: 0
"""
LATENCY_PLAN = """\
version: 1
name: drill-latency
model: {model}
variants:
  - {{name: int4, scheme: kimi-k2-thinking-int4, method: rtn, group: int4}}
suites: [lat.yaml, shaky.yaml]
gates:
  - {{metric: lat.size_ratio, max_value: 1.0, history: {{}}}}
"""


def test_drill_times_the_baseline_beside_itself_and_judges_candidate_latency_gates(
    bundled_model: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "lat.yaml").write_text(LATENCY.format(max_cv=1000))
    (tmp_path / "shaky.yaml").write_text(LATENCY.format(max_cv=1e-9))
    (tmp_path / "plan.yaml").write_text(LATENCY_PLAN.format(model=bundled_model))
    out = tmp_path / "drill"
    main(["drill", "--plan", str(tmp_path / "plan.yaml"), "--threads", "2", "--out", str(out)])
    written = json.loads((out / "drill.json").read_text())
    verdicts = {(g["metric"], g["gate"]): g["verdicts"] for g in written["gates"]}
    # latency only under repeat (its timings at other threads are another measurement, and it has no batch_size)
    assert verdicts["lat.size_ratio", "max_value 1"] == {"repeat": ["pass"]}
    # history gates on timings are left out (a rerun is never identical), the plan's other threshold kept
    assert not any(gate.startswith("history") for _, gate in verdicts)
    candidates = {m: v for (m, g), v in verdicts.items() if g.endswith("(candidate)")}
    phases = ("prefill", "decode")
    assert set(candidates) == {f"{s}.speedup_{p}_high.b1_p16" for s in ("lat", "shaky") for p in phases}
    # an unstable speedup has no number: a false alarm, saying why
    assert all(verdicts[f"shaky.speedup_{p}_high.b1_p16", f"min_value {f} (candidate)"] == {"repeat": ["missing"]}
               for p in phases for f in (0.5, 0.9))  # fmt: skip
    reasons = {(a["metric"], a["gate"]): a["reasons"] for a in written["false_alarms"]}
    assert reasons["shaky.speedup_decode_high.b1_p16", "min_value 0.5 (candidate)"][0].startswith(
        "repeat: no shaky.speedup_decode_high.b1_p16: unstable, pair ratios' CV "
    )
    assert {g for (m, g) in verdicts if m == "lat.speedup_decode_high.b1_p16"} == {
        "min_value 0.5 (candidate)", "min_value 0.9 (candidate)"
    }
    speedups = written["speedups"]
    assert set(speedups) == {f"{s}.speedup_{p}.b1_p16" for s in ("lat", "shaky") for p in phases}
    assert all(runs[0][0].isdigit() for s, runs in speedups.items() if s.startswith("lat."))  # "1.003 [0.95, 1.06]"
    assert all(runs[0].startswith("unstable (pair ratios' CV") for s, runs in speedups.items() if s.startswith("shaky"))
    printed = capsys.readouterr().out
    assert "| lat.size_ratio | max_value 1 | 0/1 | - | - | 0% |" in printed  # a copy is exactly as large
    assert "## Latency side by side" in (out / "drill.md").read_text()
