"""What a gate can see: one-sided tests of a regression, and the smallest regression each could detect.

Every test here asks one question, direction-aware: is the move to the worse side larger than chance
explains? `regression` is positive when the metric got worse. The smallest detectable regression is the
true regression that the test would call significant at `alpha` with 80 % power, from the observed
variance (POWER):

  continuous, paired or from stderrs   (z[1 - alpha] + z[POWER]) x se of the difference
  binary, paired (McNemar)             delta with delta sqrt(n) = z[1 - alpha] sqrt(p_d) + z[POWER] sqrt(p_d - delta^2)
                                       with p_d the observed share of discordant items, and never below
                                       k/n, k the fewest discordant items (all one way) the exact test
                                       can call significant

`sides=2` (a two-sided test at alpha, as McNemar's p-value gates use) puts alpha/2 in each tail.
Normal quantiles come from the standard library (statistics.NormalDist).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

POWER = 0.8
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Test:
    """The outcome of one test of a regression, in the metric's units."""

    regression: float  # > 0: worse
    p_value: float  # one-sided: P(a regression at least this large | none)
    detectable: float | None  # smallest regression detectable at alpha with 80 % power
    basis: str  # how: "paired over 40 documents", "McNemar, 12 of 120 discordant", ...


def z_sum(alpha: float, sides: int = 1) -> float:
    """z[1 - alpha/sides] + z[POWER]."""
    return _NORMAL.inv_cdf(1 - alpha / sides) + _NORMAL.inv_cdf(POWER)


def detectable_continuous(se: float | None, alpha: float, sides: int = 1) -> float | None:
    return None if se is None or math.isnan(se) else z_sum(alpha, sides) * se


def fewest_discordant(alpha: float, sides: int = 1) -> int:
    """The fewest discordant items, all one way, for which the exact binomial test gives p < alpha."""
    return math.floor(math.log2(sides / alpha)) + 1


def detectable_mcnemar(discordant: int, n: int, alpha: float, sides: int = 1) -> float | None:
    """Smallest detectable drop of a paired proportion (0..1) over `n` items, `discordant` of them flipped."""
    if n <= 0:
        return None
    p_d = discordant / n
    z_alpha, z_power = _NORMAL.inv_cdf(1 - alpha / sides), _NORMAL.inv_cdf(POWER)
    delta = (z_alpha + z_power) * math.sqrt(p_d / n)
    for _ in range(50):  # fixed point of the power equation; delta^2 <= p_d
        delta = (z_alpha * math.sqrt(p_d) + z_power * math.sqrt(max(p_d - delta * delta, 0.0))) / math.sqrt(n)
    return max(delta, fewest_discordant(alpha, sides) / n)


def one_sided_p(regression: float, se: float) -> float:
    """P(Z >= regression / se); with se 0 a regression is certain and none is impossible."""
    if se > 0:
        return 1 - _NORMAL.cdf(regression / se)
    return 0.0 if regression > 0 else 1.0


def paired_mean(
    previous: list[float], current: list[float], weights: list[float], alpha: float, lower_is_better: bool
) -> Test:
    """Weighted paired difference (each item weighted, e.g. a document by its tokens); its standard
    error treats items as the independent units (the ratio estimator's, as for clustered samples)."""
    n, total = len(weights), sum(weights)
    differences = [c - p for p, c in zip(previous, current, strict=True)]
    mean = sum(w * d for w, d in zip(weights, differences, strict=True)) / total
    spread = sum((w * (d - mean)) ** 2 for w, d in zip(weights, differences, strict=True))
    se = math.sqrt(n / (n - 1) * spread) / total if n > 1 else math.nan
    regression = mean if lower_is_better else -mean
    p = one_sided_p(regression, se) if not math.isnan(se) else (0.0 if regression > 0 else 1.0)
    return Test(regression, p, detectable_continuous(se, alpha), f"paired over {n} items")


def mcnemar_one_sided(lost: int, gained: int) -> float:
    """P(X >= lost) for X ~ Binomial(lost + gained, 1/2): the chance of this many losses or more."""
    n = lost + gained
    if n == 0:
        return 1.0
    return min(1.0, sum(math.comb(n, i) for i in range(lost, n + 1)) / 2**n)


def paired_binary(previous: list[bool], current: list[bool], alpha: float, scale: float = 1.0) -> Test:
    """A higher-is-better share (accuracy, success) on the same items, by the exact McNemar test."""
    lost = sum(p and not c for p, c in zip(previous, current, strict=True))
    gained = sum(c and not p for p, c in zip(previous, current, strict=True))
    n = len(previous)
    detectable = detectable_mcnemar(lost + gained, n, alpha)
    return Test(
        scale * (lost - gained) / n if n else 0.0,
        mcnemar_one_sided(lost, gained),
        None if detectable is None else scale * detectable,
        f"McNemar over {n} items: {lost} lost, {gained} gained",
    )


def two_stderrs(regression: float, se_now: float, se_before: float, alpha: float) -> Test:
    """Unpaired: the two values' standard errors combined."""
    se = math.hypot(se_now, se_before)
    return Test(regression, one_sided_p(regression, se), detectable_continuous(se, alpha),
                f"two stderrs, combined {se:.3g}")  # fmt: skip
