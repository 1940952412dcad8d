"""Exact McNemar p-values and flip counts against hand-computed values."""

from __future__ import annotations

import pytest

from harness.paired import flips, mcnemar_exact, paired_metrics


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
