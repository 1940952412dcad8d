"""Paired comparisons of per-item outcomes: a variant against the baseline on the same items.

flips          correct->wrong (lost) and wrong->correct (gained) counts
mcnemar_exact  two-sided exact McNemar test: a binomial(lost + gained, 1/2) test on the
               discordant pairs (no scipy: the tail is summed with math.comb)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from quantgate.core.metrics import Metric


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
