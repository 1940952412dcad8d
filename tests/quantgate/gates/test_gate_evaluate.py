"""Gate rows judged exactly (no rounding), direction-aware, and the canary logic."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantgate.core.metrics import Metric
from quantgate.core.record import ResultRecord
from quantgate.gates.evaluate import evaluate
from quantgate.plan import load_plan

BASE, GOOD, BAD = "tiny", "tiny-w4a16-g128-rtn", "tiny-w2a16-g32-rtn"


def results(
    good_ppl: float, good_acc: float = 0.8, bad_ppl: float = 20.0, *, acc_direction="higher", p: float = 0.5
) -> list[ResultRecord]:
    def pair(checkpoint, ppl, acc, role="variant"):
        comparison_ppl = [Metric("kl_mean", 0.01, "lower")] if role == "variant" else []
        comparison_acc = [Metric("acc_mcnemar_p", p, "none")] if role == "variant" else []
        return [
            ResultRecord.of(
                checkpoint,
                "perplexity",
                1,
                [Metric("perplexity", ppl, "lower", 0.1)],
                comparison_ppl,
                role=role,
            ),
            ResultRecord.of(
                checkpoint,
                "benchmark",
                1,
                [Metric("acc", acc, acc_direction, 0.02)],
                comparison_acc,
                role=role,
            ),
        ]

    return pair(BASE, 10.0, 0.8, "baseline") + pair(GOOD, good_ppl, good_acc) + pair(BAD, bad_ppl, 0.8)


def row(report, variant, metric, gate):
    return next(r for r in report.rows if (r.variant, r.metric, r.gate) == (variant, metric, gate))


def test_recovery_of_94_5_percent_fails_a_95_percent_gate(plan_file: Path):
    plan = load_plan(plan_file)
    # lower is better: recovery = baseline / value = 10 / (10 / 0.945) = 94.5 %
    report = evaluate(plan, results(good_ppl=10 / 0.945))
    gate = row(report, "good", "perplexity.perplexity", "min_recovery")
    assert gate.verdict == "fail"
    assert gate.recovery_pct == pytest.approx(94.5)
    assert "recovery 94.5 % < 95 %" in gate.reason
    assert not report.passed


def test_recovery_just_below_threshold_fails_and_exactly_at_it_passes(plan_file: Path):
    plan = load_plan(plan_file)
    just_below = row(
        evaluate(plan, results(good_ppl=10 / 0.9499999)), "good", "perplexity.perplexity", "min_recovery"
    )
    assert just_below.verdict == "fail"  # 94.99999 % would print as 95.0 with 3 digits
    exactly = row(
        evaluate(plan, results(good_ppl=10 / 0.95 - 1e-9)), "good", "perplexity.perplexity", "min_recovery"
    )
    assert exactly.verdict == "pass"


def test_max_difference_is_a_regression_in_metric_units(plan_file: Path):
    plan = load_plan(plan_file)
    gate = ("good", "benchmark.acc", "max_difference")
    within = row(evaluate(plan, results(10.0, good_acc=0.756)), *gate)  # 0.8 - 0.756 = 0.044 <= 0.05
    assert within.verdict == "pass" and "(lower is worse)" in within.reason
    beyond = row(evaluate(plan, results(10.0, good_acc=0.74)), *gate)  # 0.06 > 0.05
    assert beyond.verdict == "fail" and "> 0.05" in beyond.reason


def test_direction_decides_what_a_regression_is(plan_file: Path):
    plan = load_plan(plan_file)
    # accuracy up by 0.1: an improvement when higher is better, a regression when lower is better
    improved = evaluate(plan, results(good_ppl=10.0, good_acc=0.9))
    assert row(improved, "good", "benchmark.acc", "max_difference").verdict == "pass"
    worse = evaluate(plan, results(good_ppl=10.0, good_acc=0.9, acc_direction="lower"))
    assert row(worse, "good", "benchmark.acc", "max_difference").verdict == "fail"
    # perplexity below the baseline (better) recovers over 100 %
    assert (
        row(
            evaluate(plan, results(good_ppl=9.0)), "good", "perplexity.perplexity", "min_recovery"
        ).recovery_pct
        > 100
    )


def test_significance_fails_only_a_significant_regression(plan_file: Path):
    plan = load_plan(plan_file)
    gate = ("good", "benchmark.acc", "no_significant_regression")
    assert row(evaluate(plan, results(10.0, good_acc=0.78, p=0.001)), *gate).verdict == "fail"
    assert row(evaluate(plan, results(10.0, good_acc=0.78, p=0.2)), *gate).verdict == "pass"
    assert row(evaluate(plan, results(10.0, good_acc=0.85, p=0.001)), *gate).verdict == "pass"  # improvement
    assert row(evaluate(plan, results(10.0, good_acc=0.78, p=0.05)), *gate).verdict == "pass"  # p == alpha


def test_canary_caught_passes_the_nightly(plan_file: Path):
    report = evaluate(load_plan(plan_file), results(good_ppl=10.2, bad_ppl=20.0))
    assert report.passed
    assert any("canary bad caught" in reason for reason in report.reasons)
    assert all(r.verdict == "pass" for r in report.rows if r.variant == "good")


def test_canary_that_passes_every_gate_fails_the_nightly(plan_file: Path):
    report = evaluate(load_plan(plan_file), results(good_ppl=10.2, bad_ppl=10.1))
    assert not report.passed
    assert any("canary bad passed all" in r and "lost the sensitivity" in r for r in report.reasons)


def test_a_canary_gated_as_real_fails(plan_file: Path):
    report = evaluate(load_plan(plan_file), results(good_ppl=10.2, bad_ppl=20.0), as_real=("bad",))
    assert not report.passed
    assert any(
        r.startswith("bad fails") and "perplexity.perplexity min_recovery" in r for r in report.reasons
    )


def test_missing_results_fail_the_nightly(plan_file: Path):
    partial = [r for r in results(10.2) if not (r.variant == GOOD and r.suite == "benchmark")]
    report = evaluate(load_plan(plan_file), partial)
    assert not report.passed
    assert row(report, "good", "benchmark.acc", "max_difference").verdict == "missing"


def test_without_require_all_missing_variants_are_named_not_failed(plan_file: Path):
    """`report`/`gate` default: the variants with results are judged, the others named as missing."""
    partial = [r for r in results(10.2) if r.variant != GOOD]
    report = evaluate(load_plan(plan_file), partial, require_all=False)
    assert report.missing == ["good"] and "good" not in report.passing
    assert any(r.startswith("good: not judged, results missing") for r in report.reasons)
    assert report.passed  # the canaries are caught; nothing measured failed
    assert not evaluate(load_plan(plan_file), partial, require_all=True).passed


@given(
    baseline=st.floats(min_value=1e-3, max_value=1e3),
    ratio=st.floats(min_value=0.5, max_value=1.5),
    threshold=st.floats(min_value=50, max_value=150),
)
def test_recovery_verdict_matches_the_exact_ratio(baseline: float, ratio: float, threshold: float):
    from fractions import Fraction

    from quantgate.plan import Plan

    plan = Plan.model_validate(
        {
            "version": 1,
            "name": "p",
            "model": "tiny",
            "suites": ["s"],
            "variants": [{"name": "v", "scheme": "w8a16", "method": "rtn", "group": "g"}],
            "gates": [{"metric": "s.m", "min_recovery": threshold}],
        }
    )
    value = baseline * ratio
    report = evaluate(
        plan,
        [
            ResultRecord.of("tiny", "s", 1, [Metric("m", baseline, "higher")], role="baseline"),
            ResultRecord.of("tiny-w8a16-rtn", "s", 1, [Metric("m", value, "higher")]),
        ],
    )
    exact = Fraction(value) / Fraction(baseline) * 100 >= Fraction(threshold)
    assert (report.rows[0].verdict == "pass") == exact


def test_reasons_round_for_reading_but_never_hide_the_decision():
    from quantgate.gates.evaluate import _number

    assert _number(99.80636687570964, 99.5) == "99.81"  # not 99.80636687570964
    assert _number(99.49999, 99.5) == "99.49999"  # as many digits as tell it from the threshold
    assert _number(0.004, 0.004) == "0.004"
