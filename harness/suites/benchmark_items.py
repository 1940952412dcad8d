"""Continuous per-item measures of the `benchmark` suite, kept in samples.jsonl and compared paired.

Accuracy is one bit per item; the model's log-probabilities carry far more. Per item (one row of
samples.jsonl, keyed by task and doc_id):
  multiple choice (lm-eval `multiple_choice`, read from the logged log-likelihoods, no extra pass):
    gold_logprob  log p(gold choice | question), lm-eval's own value for the gold continuation
    margin        gold_logprob - max over the wrong choices (> 0: the item is answered correctly)
  generation (lm-eval `generate_until`, one teacher-forced log-likelihood request per item):
    gold_nll      -log p(target_delimiter + gold answer | prompt), the answer the model should have written
Against the baseline each becomes `<task>/<measure>_delta` (variant - baseline) with its 95 % interval and
a paired t-test (harness.paired.paired_continuous_metrics).
"""

from __future__ import annotations

from typing import Any

from harness.paired import paired_continuous_metrics
from quantgate.core.metrics import Direction, Metric

# measure -> (direction, unit)
MEASURES: dict[str, tuple[Direction, str]] = {
    "margin": ("higher", "nats"),
    "gold_logprob": ("higher", "nats"),
    "gold_nll": ("lower", "nats"),
}


def multiple_choice_measures(sample: dict[str, Any]) -> dict[str, float]:
    """margin and gold_logprob from a logged multiple-choice sample (filtered_resps: (ll, greedy) per choice)."""
    lls = [float(resp[0]) for resp in sample["filtered_resps"]]
    gold = int(sample["target"])
    wrong = [ll for i, ll in enumerate(lls) if i != gold]
    return {"gold_logprob": lls[gold], "margin": lls[gold] - max(wrong)} if wrong else {"gold_logprob": lls[gold]}


def gold_nll(lm: Any, samples: list[dict[str, Any]], delimiter: str) -> list[float]:
    """Teacher-forced NLL of each generation sample's gold answer after its prompt, through lm-eval's model."""
    from lm_eval.api.instance import Instance

    requests = [
        Instance(
            request_type="loglikelihood",
            doc=s["doc"],
            arguments=(s["arguments"][0][0], delimiter + str(s["target"])),
            idx=0,
        )
        for s in samples
    ]
    return [-float(ll) for ll, _greedy in lm.loglikelihood(requests)] if requests else []


def item_measures(lm: Any, samples: list[dict[str, Any]], task_config: dict[str, Any]) -> list[dict[str, float]]:
    """The continuous measures of each logged sample of one task, in the order of `samples`."""
    output_type = task_config.get("output_type")
    if output_type == "multiple_choice":
        return [multiple_choice_measures(s) for s in samples]
    if output_type == "generate_until":
        delimiter = task_config.get("target_delimiter", " ")
        return [{"gold_nll": nll} for nll in gold_nll(lm, samples, delimiter)]
    return [{} for _ in samples]  # loglikelihood / rolling tasks: accuracy only


def item_metrics(prefix: str, base_rows: list[dict], variant_rows: list[dict]) -> list[Metric]:
    """Paired metrics of every measure both sides logged for every item (rows paired by position)."""
    metrics: list[Metric] = []
    for name, (direction, unit) in MEASURES.items():
        if base_rows and all(name in r for r in base_rows) and all(name in r for r in variant_rows):
            metrics += paired_continuous_metrics(
                f"{prefix}/{name}", [r[name] for r in base_rows], [r[name] for r in variant_rows], direction, unit
            )
    return metrics
