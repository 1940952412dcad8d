"""What a report shows, gathered from result records and the gate report (no files, no MLflow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantgate.core.metrics import Metric
from quantgate.core.record import ModelRef, ResultRecord
from quantgate.gates.evaluate import evaluate
from quantgate.plan import load_plan
from quantgate.report.data import gather

PLAN = """\
version: 1
name: report-test
model: models/tiny
variants:
  - {name: good, scheme: w4a16-g128, method: rtn, group: int4}
  - {name: bad, scheme: w8a16, method: rtn, group: int4}
  - {name: w2, scheme: w2a16-g32, method: rtn, group: int4, canary: true}
  - {name: w3, scheme: w3a16-g32, method: rtn, group: int4, canary: true}
  - {name: absent, scheme: fp8-block, method: rtn, group: int4}
suites: [perplexity, latency]
gates:
  - {metric: perplexity.perplexity, min_recovery: 95}
"""


def _record(checkpoint: str, suite: str, metrics: list[Metric], comparison=None, role="variant") -> ResultRecord:
    return ResultRecord(
        model=ModelRef(path=f"/nowhere/{checkpoint}", identity="i", role=role),
        suite={"name": suite, "kind": suite, "version": 1},
        metrics=metrics,
        comparison=comparison,
        by_layer={"1": {"routing_same_experts": 0.75}, "0": {"routing_same_experts": 0.5, "kl_mean": 0.01}},
    )


@pytest.fixture
def report(tmp_path: Path):
    (tmp_path / "plan.yaml").write_text(PLAN)
    plan = load_plan(tmp_path / "plan.yaml")
    ppl = {"tiny": 10.0, "tiny-w4a16-g128-rtn": 10.2, "tiny-w8a16-rtn": 12.0, "tiny-w2a16-g32-rtn": 20.0,
           "tiny-w3a16-g32-rtn": 10.1}  # fmt: skip
    results = [
        _record(c, "perplexity", [Metric("perplexity", v, "lower", 0.1)], role="baseline" if c == "tiny" else "variant")
        for c, v in ppl.items()
    ]
    results.append(_record("tiny-w4a16-g128-rtn", "latency", [Metric("checkpoint_bytes", 4e6, "lower"),
                                                              Metric("bits_per_weight", 4.5, "lower")]))  # fmt: skip
    gates = evaluate(plan, results)
    return plan, gather(plan, results, gates, "n1")


def test_outcomes_without_the_unmeasured_suite(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text(PLAN.replace("suites: [perplexity, latency]", "suites: [perplexity]"))
    plan = load_plan(tmp_path / "plan.yaml")
    ppl = {"tiny": 10.0, "tiny-w4a16-g128-rtn": 10.2, "tiny-w8a16-rtn": 12.0, "tiny-w2a16-g32-rtn": 20.0,
           "tiny-w3a16-g32-rtn": 10.1}  # fmt: skip
    results = [
        _record(c, "perplexity", [Metric("perplexity", v, "lower", 0.1)], role="baseline" if c == "tiny" else "variant")
        for c, v in ppl.items()
    ]
    data = gather(plan, results, evaluate(plan, results), "n1")
    outcome = {row.name: row.outcome for row in data.variants}
    assert outcome == {"good": "pass", "bad": "fail", "w2": "caught", "w3": "MISSED", "absent": "incomplete"}
    assert data.recovery_pct("tiny-w8a16-rtn", "perplexity", "perplexity") == pytest.approx(100 * 10 / 12)
    assert data.by_layer("tiny-w8a16-rtn", "routing_same_experts") == {0: 0.5, 1: 0.75}
    assert data.by_layer("tiny-w8a16-rtn", "kl_mean") == {0: 0.01}


def test_sizes_come_from_the_latency_suite(report) -> None:
    _, data = report
    good = next(row for row in data.variants if row.name == "good")
    assert (good.checkpoint_bytes, good.bits_per_weight) == (4e6, 4.5)
    bad = next(row for row in data.variants if row.name == "bad")
    assert (bad.checkpoint_bytes, bad.bits_per_weight) == (None, None)  # no latency result, no manifest


def test_variants_are_shown_in_narrow_tables_one_per_suite(report) -> None:
    """One wide row per variant overflowed a laptop screen: identity in one table, each suite's headline
    metrics (quantgate.core.headline) in its own."""
    from quantgate.report.render import _suite_tables, _variant_table, markdown

    plan, data = report
    header, rows = _variant_table(data)
    assert len(header) == 7 and len(rows) == 1 + len(plan.variants)
    tables = {suite: (columns, rows) for suite, columns, rows in _suite_tables(data)}
    assert tables["perplexity"][0] == ["variant", "perplexity"]
    assert tables["perplexity"][1][1] == ["good", "10.2 (98.0 %)"]
    assert tables["latency"][0] == ["variant", "bits_per_weight"]
    assert "### perplexity (recovery against BF16 in brackets)" in markdown(data, [])
