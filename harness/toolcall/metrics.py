"""Tool-calling metrics, computed from episode rows (`Episode.to_json()` plus the grading fields).

One model:
  task_success       final environment state equals the expected state (tau-bench), the episode ended
                     in a final answer, and that answer contains `expected_answer` when there is one
  pass^k             P(all k samples of a task succeed), unbiased from n samples: C(c, k) / C(n, k)
  schema_accuracy    calls that are well-formed, name a declared tool and pass its JSON schema / all calls
  wrong_tool_rate    calls naming a tool the reference solution does not use (undeclared, for requests
                     without a reference) / calls with a readable name
  malformed_rate     malformed assistant turns / all turns
  mean_steps         assistant turns per episode
  trigger_accuracy   first turns whose call-or-not decision matches the reference's, where one is known
  dropped_rate       turns where the parser discarded tool-call syntax, as the engine would / all turns
K2-Vendor-Verifier's own, over K2VV request rows (first turns, `harness.toolcall.k2vv_rules`), K2VV's names
with a `k2vv_` prefix: k2vv_count_finish_reason_tool_calls, k2vv_count_successful_tool_call,
k2vv_schema_accuracy (per response, not per call); against the baseline or a K2VV reference results file:
k2vv_tool_call_precision / _recall / _f1 from finish_reason == "tool_calls", 0 when a denominator is 0.
Against the baseline (same prompts, rows paired by source, id and sample):
  trigger precision / recall / F1 of the variant's first-turn call-or-not decisions, the baseline's
  decisions being the reference (K2-Vendor-Verifier's primary metric); task success flips + McNemar.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from harness.paired import binomial_stderr, mean_stderr, paired_metrics
from harness.toolcall.k2vv_rules import schema_counts, trigger_f1
from quantgate.core.metrics import Metric

Row = dict[str, Any]


def _proportion(name: str, hits: int, n: int, direction: str = "higher") -> Metric:
    return Metric(name, hits / n if n else 0.0, direction, binomial_stderr(hits, n), n=n)


def pass_hat_k(successes: int, samples: int, k: int) -> float:
    """P(k samples drawn without replacement from `samples` trials all succeed)."""
    return math.comb(successes, k) / math.comb(samples, k)


def task_success(
    outcome: str | None,
    final_answer: str | None,
    final_state: dict[str, Any],
    expected_state: dict[str, Any],
    expected_answer: str | None,
) -> bool:
    """tau-bench grading: the final state, plus the expected answer's text in the final answer when set."""
    if outcome != "answer" or final_state != expected_state:
        return False
    return expected_answer is None or expected_answer in (final_answer or "")


def measure_metrics(rows: Sequence[Row]) -> list[Metric]:
    metrics: list[Metric] = []
    graded = [r for r in rows if r["success"] is not None]
    if graded:
        metrics.append(_proportion("task_success", sum(r["success"] for r in graded), len(graded)))
        per_task: dict[str, list[bool]] = defaultdict(list)
        for r in graded:
            per_task[r["id"]].append(r["success"])
        samples = min(len(v) for v in per_task.values())
        for k in range(2, samples + 1):
            values = [pass_hat_k(sum(v), len(v), k) for v in per_task.values()]
            metrics.append(
                Metric(f"pass^{k}", sum(values) / len(values), "higher", mean_stderr(values), n=len(values))
            )
    calls = [c for r in rows for c in r["calls"]]
    metrics.append(_proportion("schema_accuracy", sum(c["status"] == "ok" for c in calls), len(calls)))
    named = [(c, r) for r in rows for c in r["calls"] if c["name"] is not None]
    wrong = sum(_wrong_tool(c, r) for c, r in named)
    metrics.append(_proportion("wrong_tool_rate", wrong, len(named), "lower"))
    steps = [r["steps"] for r in rows]
    metrics.append(
        _proportion("malformed_rate", sum(r["malformed_steps"] for r in rows), sum(steps), "lower")
    )
    metrics.append(
        Metric(
            "mean_steps",
            sum(steps) / len(steps) if steps else 0.0,
            "none",
            mean_stderr(steps),
            unit="turns",
            n=len(steps),
        )
    )
    first = [r for r in rows if r["first_step_trigger"] is not None]
    metrics.append(
        _proportion("tool_trigger_rate", sum(r["first_step_trigger"] for r in first), len(first), "none")
    )
    referenced = [r for r in first if r["expected_trigger"] is not None]
    if referenced:
        agree = sum(r["first_step_trigger"] == r["expected_trigger"] for r in referenced)
        metrics.append(_proportion("trigger_accuracy", agree, len(referenced)))
    metrics.append(_proportion("dropped_rate", sum(r.get("dropped_steps", 0) for r in rows), sum(steps), "lower"))
    return metrics + k2vv_metrics(rows)


def _k2vv_rows(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r["source"] == "request" and r.get("k2vv") is not None]


def k2vv_metrics(rows: Sequence[Row]) -> list[Metric]:
    """K2VV's schema counts over the K2VV request rows (none without them)."""
    records = [r["k2vv"] for r in _k2vv_rows(rows)]
    if not records:
        return []
    counts = schema_counts(records)
    triggered, successful = counts["count_finish_reason_tool_calls"], counts["count_successful_tool_call"]
    return [
        Metric("k2vv_count_finish_reason_tool_calls", triggered, "none", unit="responses", n=len(records)),
        Metric("k2vv_count_successful_tool_call", successful, "none", unit="responses", n=len(records)),
        Metric("k2vv_schema_accuracy", counts["schema_accuracy"], "higher", binomial_stderr(successful, triggered),
               n=triggered),
    ]


def _k2vv_trigger_metrics(scores: dict[str, Any]) -> list[Metric]:
    n = scores["matched"]
    return [Metric(f"k2vv_{name}", scores[name], "higher", None, n=n)
            for name in ("tool_call_precision", "tool_call_recall", "tool_call_f1")]


def k2vv_reference_metrics(reference: dict[int, str | None], rows: Sequence[Row]) -> list[Metric]:
    """K2VV's F1 of these request rows against a K2VV results file's finish reasons, by data_index."""
    test = {r["data_index"]: r["k2vv"]["finish_reason"] for r in _k2vv_rows(rows)}
    return _k2vv_trigger_metrics(trigger_f1(reference, test))


def _wrong_tool(call: Row, row: Row) -> bool:
    if row["reference_tools"] is not None:
        return call["name"] not in row["reference_tools"]
    return call["status"] == "undeclared_tool"


def trigger_scores(reference: Sequence[bool], predicted: Sequence[bool]) -> list[Metric]:
    """Precision, recall and F1 of `predicted` call-or-not decisions against `reference` ones.

    With no positive on either side the two agree completely and all three are 1; a side with
    positives against one without scores 0.
    """
    pairs = list(zip(reference, predicted, strict=True))
    tp = sum(r and p for r, p in pairs)
    fp = sum(p and not r for r, p in pairs)
    fn = sum(r and not p for r, p in pairs)
    precision = tp / (tp + fp) if tp + fp else float(fn == 0)
    recall = tp / (tp + fn) if tp + fn else float(fp == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return [
        Metric("trigger_precision", precision, "higher", binomial_stderr(tp, tp + fp), n=tp + fp),
        Metric("trigger_recall", recall, "higher", binomial_stderr(tp, tp + fn), n=tp + fn),
        Metric("trigger_f1", f1, "higher", None, n=len(pairs)),
    ]


def _paired_rows(baseline: Sequence[Row], variant: Sequence[Row]) -> list[tuple[Row, Row]]:
    def key(row: Row) -> tuple[str, str, int]:
        return row["source"], row["id"], row["sample"]

    base = {key(r): r for r in baseline}
    var = {key(r): r for r in variant}
    if base.keys() != var.keys():
        missing, extra = sorted(base.keys() - var.keys())[:3], sorted(var.keys() - base.keys())[:3]
        raise ValueError(f"variant and baseline ran different prompts (missing {missing}, extra {extra})")
    return [(base[k], var[k]) for k in sorted(base)]


def compare_metrics(baseline: Sequence[Row], variant: Sequence[Row]) -> list[Metric]:
    pairs = _paired_rows(baseline, variant)
    first = [
        (b, v)
        for b, v in pairs
        if b["first_step_trigger"] is not None and v["first_step_trigger"] is not None
    ]
    metrics = trigger_scores(
        [b["first_step_trigger"] for b, _ in first], [v["first_step_trigger"] for _, v in first]
    )
    k2vv = [(b, v) for b, v in pairs if b["source"] == "request" and b.get("k2vv") and v.get("k2vv")]
    if k2vv:
        metrics += _k2vv_trigger_metrics(trigger_f1(
            {i: b["k2vv"]["finish_reason"] for i, (b, _) in enumerate(k2vv)},
            {i: v["k2vv"]["finish_reason"] for i, (_, v) in enumerate(k2vv)},
        ))
    graded = [(b, v) for b, v in pairs if b["success"] is not None]
    if graded:
        metrics += paired_metrics(
            "task_success", [b["success"] for b, _ in graded], [v["success"] for _, v in graded]
        )
    return metrics
