"""`quantgate drill` on the bundled model: the baseline against itself under repeat, another thread count
and batch 1 raises no false alarm on the deterministic CPU backend, and the table is printed and written."""

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
