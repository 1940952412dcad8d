"""Statistics of per-step disagreement along long sessions.

Teacher-forced, every step sees the same recorded history, so steps are independent trials: with a
per-step disagreement rate p, the probability of getting through k steps without one is (1 - p)^k.
  - rate: p = disagreements / steps with its Wilson score interval (95 %);
  - survival: S(k) = (1 - p)^k, and its band from the interval's ends; projected completion of 100, 200
    and 300 steps is S at those k (a rate of 0 projects 1, its band still below by the interval);
  - drift: p over the first and second half of each session's steps (early, late), their difference with
    a two-sided two-proportion z-test, and p over short against long prompts (split at the median), to
    show whether disagreement grows along the session or with the context the model sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Z95 = 1.959963984540054
HORIZONS = (100, 200, 300)


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of hits / n (0, 1 when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def survival(rate: float, steps: int) -> float:
    """Probability of no disagreement in `steps` independent steps at per-step `rate`."""
    return (1.0 - rate) ** steps


def two_proportion_p(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """Two-sided p-value of the z-test that two proportions are equal (1.0 when undefined)."""
    if n_a == 0 or n_b == 0:
        return 1.0
    pooled = (hits_a + hits_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return 1.0
    z = abs(hits_a / n_a - hits_b / n_b) / spread
    return math.erfc(z / math.sqrt(2))


def _rate(rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    return sum(1 for r in rows if not r["agree"]), len(rows)


def horizon_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """rows: one per scored step with "agree", "step", "session_steps" and "prompt_tokens"."""
    misses, n = _rate(rows)
    rate = misses / n if n else 0.0
    low, high = wilson(misses, n)
    early = [r for r in rows if r["step"] < r["session_steps"] / 2]
    late = [r for r in rows if r["step"] >= r["session_steps"] / 2]
    lengths = sorted(r["prompt_tokens"] for r in rows)
    median = lengths[len(lengths) // 2] if lengths else 0
    short = [r for r in rows if r["prompt_tokens"] < median]
    long = [r for r in rows if r["prompt_tokens"] >= median]
    (early_miss, early_n), (late_miss, late_n) = _rate(early), _rate(late)
    (short_miss, short_n), (long_miss, long_n) = _rate(short), _rate(long)
    return {
        "disagreements": misses, "steps": n, "rate": rate, "rate_low": low, "rate_high": high,
        "completion": {
            k: {"value": survival(rate, k), "low": survival(high, k), "high": survival(low, k)} for k in HORIZONS
        },
        "early": {"disagreements": early_miss, "steps": early_n, "rate": early_miss / early_n if early_n else 0.0},
        "late": {"disagreements": late_miss, "steps": late_n, "rate": late_miss / late_n if late_n else 0.0},
        "late_vs_early_p": two_proportion_p(early_miss, early_n, late_miss, late_n),
        "prompt_median_tokens": median,
        "short_prompts": {"steps": short_n, "rate": short_miss / short_n if short_n else 0.0},
        "long_prompts": {"steps": long_n, "rate": long_miss / long_n if long_n else 0.0},
        "long_vs_short_p": two_proportion_p(short_miss, short_n, long_miss, long_n),
    }
