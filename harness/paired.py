"""Paired comparisons of per-item outcomes: a variant against the baseline on the same items.

flips          correct->wrong (lost) and wrong->correct (gained) counts
mcnemar_exact  two-sided exact McNemar test: a binomial(lost + gained, 1/2) test on the
               discordant pairs (no scipy: the tail is summed with math.comb)
paired_t       continuous per-item measures (margins, NLL, KL): a two-sided paired t-test on the
               per-item differences and the 95 % interval of their mean (why t and not Wilcoxon: below)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from quantgate.core.metrics import Direction, Metric


@dataclass(frozen=True)
class Flips:
    n: int
    both_correct: int
    lost: int  # correct in the baseline, wrong in the variant
    gained: int  # wrong in the baseline, correct in the variant
    both_wrong: int


def flips(baseline: Sequence[bool], variant: Sequence[bool]) -> Flips:
    if len(baseline) != len(variant):
        raise ValueError(
            f"paired outcomes differ in length: {len(baseline)} baseline, {len(variant)} variant"
        )
    pairs = list(zip(baseline, variant, strict=True))
    return Flips(
        n=len(pairs),
        both_correct=sum(b and v for b, v in pairs),
        lost=sum(b and not v for b, v in pairs),
        gained=sum(v and not b for b, v in pairs),
        both_wrong=sum(not b and not v for b, v in pairs),
    )


def mcnemar_exact(lost: int, gained: int) -> float:
    """Two-sided p-value: 2 * P(X <= min(lost, gained)) for X ~ Binomial(lost + gained, 1/2), capped at 1."""
    n = lost + gained
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(lost, gained) + 1))
    return min(1.0, 2 * tail / 2**n)


def binomial_stderr(successes: int, n: int) -> float | None:
    """Standard error of a proportion, sqrt(p (1 - p) / n); None without samples."""
    if n == 0:
        return None
    p = successes / n
    return math.sqrt(p * (1 - p) / n)


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of a mean (sample standard deviation / sqrt(n)); None under two samples."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def paired_metrics(prefix: str, baseline: Sequence[bool], variant: Sequence[bool]) -> list[Metric]:
    """Accuracy delta (paired stderr), flips both ways and the exact McNemar p-value."""
    counts = flips(baseline, variant)
    differences = [float(v) - float(b) for b, v in zip(baseline, variant, strict=True)]
    delta = sum(differences) / counts.n if counts.n else 0.0
    return [
        Metric(f"{prefix}_delta", delta, "higher", mean_stderr(differences), n=counts.n),
        Metric(f"{prefix}_lost", counts.lost, "lower", unit="items", n=counts.n),
        Metric(f"{prefix}_gained", counts.gained, "higher", unit="items", n=counts.n),
        Metric(
            f"{prefix}_mcnemar_p",
            mcnemar_exact(counts.lost, counts.gained),
            "none",
            n=counts.lost + counts.gained,
        ),
    ]


# -- continuous per-item measures: paired t-test --------------------------------------------------
# Each item is scored by both models (a log-prob margin, a gold answer's NLL, a tool call's KL); the
# test is on the per-item differences d_i = variant_i - baseline_i: a two-sided paired t-test (Student
# t with n - 1 degrees of freedom) and its 95 % interval, mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n).
# The t-test rather than Wilcoxon's signed-rank test: it gives an interval for the mean change in the
# measure's own unit (what a gate threshold is written in), and with n >= 30 items the mean is close to
# normal whatever the items' distribution. No scipy: Student's t comes from the regularised incomplete
# beta function (Numerical Recipes' continued fraction, `_betainc`).

CONFIDENCE = 0.95


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), to 1e-15."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for T ~ Student t with `df` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def student_t_quantile(probability: float, df: int) -> float:
    """The t with P(T <= t) = probability (> 0.5), by bisection on the two-sided tail."""
    tail = 2.0 * (1.0 - probability)
    low, high = 0.0, 1e6
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if student_t_two_sided_p(middle, df) > tail else (low, middle)
    return 0.5 * (low + high)


@dataclass(frozen=True)
class PairedTest:
    n: int
    mean: float  # mean of variant - baseline
    stderr: float | None  # sd(d) / sqrt(n)
    low: float  # 95 % interval of the mean difference
    high: float
    p_value: float  # two-sided paired t-test


def paired_t(baseline: Sequence[float], variant: Sequence[float]) -> PairedTest:
    """Paired t-test of variant - baseline; identical values give p = 1 and a zero-width interval."""
    if len(baseline) != len(variant):
        raise ValueError(
            f"paired values differ in length: {len(baseline)} baseline, {len(variant)} variant"
        )
    differences = [float(v) - float(b) for b, v in zip(baseline, variant, strict=True)]
    n = len(differences)
    if n == 0:
        raise ValueError("paired test on no items")
    mean = math.fsum(differences) / n
    stderr = mean_stderr(differences)
    if stderr is None or stderr == 0.0:  # one item, or every difference the same: no spread to test against
        p = 1.0 if stderr is None or mean == 0.0 else 0.0
        return PairedTest(n, mean, stderr, mean, mean, p)
    half = student_t_quantile(0.5 + CONFIDENCE / 2, n - 1) * stderr
    p = student_t_two_sided_p(mean / stderr, n - 1)
    return PairedTest(n, mean, stderr, mean - half, mean + half, p)


def paired_continuous_metrics(
    prefix: str, baseline: Sequence[float], variant: Sequence[float], direction: Direction, unit: str = ""
) -> list[Metric]:
    """`{prefix}_delta` (variant - baseline, the measure's direction, paired stderr), its 95 % interval
    `{prefix}_delta_low` / `_high`, and the paired t-test's two-sided `{prefix}_ttest_p`."""
    test = paired_t(baseline, variant)
    unit = f"{unit}, variant - baseline" if unit else "variant - baseline"
    return [
        Metric(f"{prefix}_delta", test.mean, direction, test.stderr, unit, test.n),
        Metric(f"{prefix}_delta_low", test.low, direction, None, f"{unit}, 95 % interval low", test.n),
        Metric(f"{prefix}_delta_high", test.high, direction, None, f"{unit}, 95 % interval high", test.n),
        Metric(f"{prefix}_ttest_p", test.p_value, "none", None, "paired t-test, two-sided", test.n),
    ]
