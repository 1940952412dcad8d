"""The headline metrics of each suite kind, named once: what `eval` prints at the end, what MLflow
charts as metric keys, what a reader looks at first. Everything else a suite measures (percentiles,
per-layer routing, per-condition latency, counts) stays in the result files and in the MLflow run's
metrics table (`metrics.json`), never as a key of its own.

Units: shares are 0-1 (`task_success` 0.20), with two exceptions named by the metric itself:
`same_top1` is a percent of tokens (as llama.cpp's "Same top p") and `recovery_pct` is a percent
of the baseline. Ratios to the baseline (`size_ratio`, `speedup_decode`) are plain ratios.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from quantgate.core.metrics import Metric

MEASURED = "*"  # every metric the suite measured (benchmark: one per task and metric; the tasks decide)

HEADLINES: dict[str, tuple[str, ...]] = {  # suite kind -> metric names or patterns, in reading order
    "perplexity": ("perplexity", "kl_mean", "same_top1"),
    "benchmark": (MEASURED,),
    "toolcall": ("task_success", "trigger_f1", "schema_accuracy", "k2vv_schema_accuracy"),
    "longhorizon": ("action_kl_mean", "disagreement_rate", "completion_200", "valid_call_rate"),
    "latency": ("size_ratio", "bits_per_weight", "speedup_decode.*", "speedup_prefill.*"),
    "serving_latency": ("throughput_ratio.*", "ttft_ratio_p50.*", "itl_ratio_p50.*"),
}


def headline_metrics(kind: str, measured: list[Metric], comparison: list[Metric] | None) -> list[Metric]:
    """The headline metrics of one result, in the registry's order (measured first, then compared).
    A suite kind the registry does not name has every measured metric as headline."""
    patterns = HEADLINES.get(kind, (MEASURED,))
    out: list[Metric] = []
    for pattern in patterns:
        pool = [m for m in measured if "." not in m.name] if pattern == MEASURED else measured + (comparison or [])
        out += [m for m in pool if (pattern == MEASURED or fnmatchcase(m.name, pattern)) and m not in out]
    return out
