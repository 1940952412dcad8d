"""Exact McNemar p-values and flip counts against hand-computed values."""

from __future__ import annotations

import pytest

from harness.paired import (
    flips,
    mcnemar_exact,
    paired_continuous_metrics,
    paired_metrics,
    paired_t,
    student_t_quantile,
    student_t_two_sided_p,
)


@pytest.mark.parametrize(
    ("lost", "gained", "p"),
    [
        (0, 0, 1.0),  # no discordant pair
        (1, 0, 1.0),  # 2 * C(1,0) / 2^1 = 1
        (3, 3, 1.0),  # 2 * (1 + 6 + 15 + 20) / 64 = 1.3125, capped
        (5, 0, 0.0625),  # 2 * 1 / 32
        (2, 8, 0.109375),  # 2 * (1 + 10 + 45) / 1024
        (10, 1, 0.01171875),  # 2 * (1 + 11) / 2048
        (0, 12, 2 / 4096),
    ],
)
def test_mcnemar_exact(lost, gained, p):
    assert mcnemar_exact(lost, gained) == pytest.approx(p, abs=0, rel=1e-12)
    assert mcnemar_exact(gained, lost) == mcnemar_exact(lost, gained)


def test_flips_and_paired_metrics():
    baseline = [True, True, True, False, False, True]
    variant = [True, False, False, True, False, True]
    assert flips(baseline, variant) == flips(baseline, variant).__class__(
        n=6, both_correct=2, lost=2, gained=1, both_wrong=1
    )
    metrics = {m.name: m for m in paired_metrics("acc", baseline, variant)}
    assert metrics["acc_delta"].value == pytest.approx(-1 / 6)
    assert metrics["acc_lost"].value == 2 and metrics["acc_lost"].direction == "lower"
    assert metrics["acc_gained"].value == 1
    assert metrics["acc_mcnemar_p"].value == 1.0  # 2 * (1 + 3) / 8, capped


def test_unpaired_lengths_raise():
    with pytest.raises(ValueError, match="differ in length"):
        flips([True], [True, False])


def test_student_t_against_tables():
    # two-sided 95 % critical values from t tables; P(|T| >= 2.228, df 10) = 0.05
    assert student_t_quantile(0.975, 1) == pytest.approx(12.7062047, rel=1e-7)
    assert student_t_quantile(0.975, 9) == pytest.approx(2.2621572, rel=1e-7)
    assert student_t_quantile(0.975, 119) == pytest.approx(1.9800999, rel=1e-7)
    assert student_t_two_sided_p(2.2281389, 10) == pytest.approx(0.05, rel=1e-6)
    assert student_t_two_sided_p(0.0, 5) == 1.0


def test_paired_t_by_hand():
    baseline = [1.0, 2.0, 3.0, 4.0]
    variant = [1.5, 2.0, 2.0, 3.5]  # differences 0.5, 0, -1, -0.5: mean -0.25, sd 0.6455, stderr 0.32275
    test = paired_t(baseline, variant)
    assert test.mean == -0.25 and test.stderr == pytest.approx(0.6454972 / 2, rel=1e-6)
    half = 3.1824463 * test.stderr  # t_{0.975, 3}
    assert (test.low, test.high) == (pytest.approx(-0.25 - half, rel=1e-6), pytest.approx(-0.25 + half, rel=1e-6))
    assert test.p_value == pytest.approx(0.4950, abs=1e-4)  # t = -0.7746 on 3 df
    metrics = {m.name: m for m in paired_continuous_metrics("margin", baseline, variant, "higher", "nats")}
    assert metrics["margin_delta"].direction == "higher" and metrics["margin_ttest_p"].direction == "none"
    assert metrics["margin_delta_low"].value == test.low
    same = paired_t(baseline, baseline)
    assert (same.mean, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert paired_t([0.0, 0.0], [1.0, 1.0]).p_value == 0.0  # a constant shift: no spread, certain
