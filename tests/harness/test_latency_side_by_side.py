"""Speedups from alternating pairs: geometric mean of the pair ratios, a t interval, unstable past max_cv."""

from __future__ import annotations

import math

import pytest

from harness.suites.latency import LatencyConfig, side_by_side_metrics

CONFIG = LatencyConfig(
    name="lat",
    kind="latency",
    version=2,
    batch_sizes=[1],
    prompt_lengths=[8],
    decode_tokens=4,
    warmup=1,
    repeats=4,
    max_cv=0.1,
    retries=1,
)


def _rows(attempt: int, variant: list[float], baseline: list[float]) -> list[dict]:
    return [
        {
            "batch_size": 1,
            "prompt_length": 8,
            "attempt": attempt,
            "pair": i,
            "first": "variant",
            "prefill_s": v,
            "decode_s": v,
            "baseline_prefill_s": b,
            "baseline_decode_s": b,
        }
        for i, (v, b) in enumerate(zip(variant, baseline, strict=True))
    ]


def test_speedup_is_the_geometric_mean_of_the_last_attempt():
    # attempt 0: one pair taken while another process ran (ratio 0.1): unstable, measured again
    noisy = _rows(0, [1.0, 10.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0])
    steady = _rows(1, [1.0, 2.0, 1.05, 2.1], [2.0, 4.2, 2.0, 4.0])  # ratios 2, 2.1, 1.905, 1.905
    metrics = {m.name: m for m in side_by_side_metrics(CONFIG, noisy + steady)}
    ratios = [2.0, 2.1, 2.0 / 1.05, 4.0 / 2.1]
    assert metrics["speedup_decode.b1_p8"].value == pytest.approx(math.prod(ratios) ** 0.25, rel=1e-12)
    assert metrics["speedup_decode_low.b1_p8"].value < metrics["speedup_decode.b1_p8"].value
    assert metrics["speedup_decode_high.b1_p8"].value > metrics["speedup_decode.b1_p8"].value
    assert metrics["speedup_decode.b1_p8"].direction == "higher" and metrics["speedup_decode.b1_p8"].n == 4


def test_a_spread_past_max_cv_is_unstable_never_a_number():
    metrics = {m.name: m for m in side_by_side_metrics(CONFIG, _rows(0, [1.0, 10.0, 1.0, 1.0], [1.0] * 4))}
    assert "speedup_prefill.b1_p8" not in metrics and "speedup_decode.b1_p8" not in metrics
    assert metrics["unstable_prefill.b1_p8"].value == 1.0 and "> 0.1" in metrics["unstable_prefill.b1_p8"].unit
