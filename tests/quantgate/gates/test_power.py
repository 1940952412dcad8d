"""What a gate can detect: exact test values, the detectable regression, and the warning when a threshold
asks for less than its data can show; history rows from two stderrs (no per-item values)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from quantgate.core.metrics import Metric
from quantgate.core.record import ResultRecord, read_results
from quantgate.gates import power
from quantgate.gates.evaluate import evaluate
from quantgate.gates.history import History, PreviousNightly, judge_history
from quantgate.plan import HistoryThreshold, load_plan

Z95_PLUS_Z80 = 1.6448536269514722 + 0.8416212335729143


def test_fewest_discordant_items_the_exact_test_can_call_significant() -> None:
    assert power.fewest_discordant(0.05) == 5  # 0.5^5 = 0.031 < 0.05 <= 0.5^4
    assert power.fewest_discordant(0.05, sides=2) == 6  # 2 x 0.5^6 = 0.031
    assert power.mcnemar_one_sided(5, 0) == 1 / 32 and power.mcnemar_one_sided(0, 0) == 1.0


def test_detectable_regressions() -> None:
    assert math.isclose(power.detectable_continuous(0.001, 0.05), Z95_PLUS_Z80 * 0.001)
    delta = power.detectable_mcnemar(12, 120, 0.05)
    p_d, z_a, z_b = 0.1, 1.6448536269514722, 0.8416212335729143
    assert math.isclose(delta * math.sqrt(120), z_a * math.sqrt(p_d) + z_b * math.sqrt(p_d - delta**2), rel_tol=1e-9)
    assert power.detectable_mcnemar(0, 120, 0.05) == 5 / 120  # no flips seen: the exact test's floor


def test_paired_tests_are_direction_aware() -> None:
    worse = power.paired_mean([1.0, 2.0, 3.0], [1.1, 2.1, 3.3], [1.0, 1.0, 2.0], 0.05, lower_is_better=True)
    assert math.isclose(worse.regression, (0.1 + 0.1 + 2 * 0.3) / 4) and worse.p_value < 0.05
    better = power.paired_mean([1.0, 2.0, 3.0], [1.1, 2.1, 3.3], [1.0, 1.0, 2.0], 0.05, lower_is_better=False)
    assert better.regression < 0 and better.p_value > 0.95
    flips = power.paired_binary([True] * 7 + [False] * 3, [False] * 7 + [False] * 3, 0.05)
    assert flips.regression == 0.7 and flips.p_value == 1 / 128 and "7 lost, 0 gained" in flips.basis


def test_every_row_states_its_power_and_fine_thresholds_are_warned(
    nightly: Callable[..., Path], plan_file: Path
) -> None:
    results = read_results(nightly(good=(10.2, 0.01, 0.79, 0.5), bad=(12.0, 0.2, 0.6, 0.001)))
    report = evaluate(load_plan(plan_file), results)
    rows = {(r.variant, r.metric, r.gate): r for r in report.rows}
    kl = rows["good", "perplexity.kl_mean", "max_value"]
    assert math.isclose(kl.detectable, Z95_PLUS_Z80 * 0.001)
    assert kl.detectable_basis == "stderr of the value, alpha 0.05"
    acc = rows["good", "benchmark.acc", "max_difference"]
    assert math.isclose(acc.detectable, Z95_PLUS_Z80 * math.hypot(0.02, 0.02))
    assert acc.detectable_basis.startswith("two stderrs")
    assert any(w.startswith("good: benchmark.acc max_difference: the threshold lets through a regression of 0.05")
               for w in report.warnings)  # fmt: skip


@pytest.mark.parametrize(("kl", "verdict"), [(0.0104, "pass"), (0.016, "fail")])
def test_history_without_items_uses_the_two_stderrs(
    nightly: Callable[..., Path], plan_file: Path, kl: float, verdict: str
) -> None:
    plan_file.write_text(plan_file.read_text().replace("max_value: 0.05}", "history: {alpha: 0.05}}"))
    before = read_results(nightly(good=(10.2, 0.01, 0.79, 0.5)))
    now = [
        r if r.metric("kl_mean") is None else r.model_copy(
            update={"comparison": [Metric("kl_mean", kl, "lower", 0.001, "nats/token", 500)]}
        ).at(r.folder)
        for r in before
    ]  # fmt: skip
    plan = load_plan(plan_file)
    plan = plan.model_copy(update={"variants": plan.variants[:1]})
    report = evaluate(plan, now, history=History(PreviousNightly("n0", "test", before)))
    [row] = [r for r in report.rows if r.gate == "history"]
    assert row.verdict == verdict and row.previous == 0.01, row.reason
    assert "changed: environment not kept" in row.reason and "two stderrs" in row.reason
    assert math.isclose(row.detectable, Z95_PLUS_Z80 * math.hypot(0.001, 0.001))


def test_a_gate_without_previous_values_passes_and_says_so(nightly: Callable[..., Path], plan_file: Path) -> None:
    plan_file.write_text(plan_file.read_text().replace("max_value: 0.05}", "history: {}}"))
    results: list[ResultRecord] = read_results(nightly(good=(10.2, 0.01, 0.79, 0.5)))
    plan = load_plan(plan_file)
    plan = plan.model_copy(update={"variants": plan.variants[:1]})
    report = evaluate(plan, results, history=History(None, "first nightly: no passing nightly of plan gate-test"))
    [row] = [r for r in report.rows if r.gate == "history"]
    assert row.verdict == "pass"
    assert row.reason == "nothing to compare with: first nightly: no passing nightly of plan gate-test"


def _benchmark_result(folder: Path, correct: list[bool]) -> ResultRecord:
    folder.mkdir(parents=True)
    rows = [{"task": "mcq", "doc_id": i, "correct": c} for i, c in enumerate(correct)]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "environment.json").write_text(json.dumps({"backend": {"threads": 2}, "packages": {"quantgate": "x"}}))
    acc = Metric("mcq/acc", sum(correct) / len(correct), "higher", 0.04, n=len(correct))
    record = ResultRecord.of("int4", "benchmark", 1, [acc])
    record = record.model_copy(update={"suite_config": {"name": "benchmark", "kind": "benchmark", "version": 1}})
    return record.at(folder)


def test_history_of_a_benchmark_is_paired_per_item_by_mcnemar(tmp_path: Path) -> None:
    before = _benchmark_result(tmp_path / "n1", [True] * 60 + [False] * 40)
    now = _benchmark_result(tmp_path / "n2", [False] * 7 + [True] * 53 + [False] * 40)  # 7 items lost
    now = now.model_copy(update={"model": now.model.model_copy(update={"identity": "new build"})}).at(now.folder)
    verdict = judge_history(now, now.metric("mcq/acc"), History(PreviousNightly("n1", "test", [before])),
                            HistoryThreshold())  # fmt: skip
    assert not verdict.passed and "McNemar over 100 items: 7 lost, 0 gained" in verdict.reason
    assert math.isclose(verdict.test.p_value, 1 / 128) and math.isclose(verdict.test.regression, 0.07)
    assert "changed: checkpoint;" in verdict.reason
