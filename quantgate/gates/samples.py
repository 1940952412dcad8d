"""Per-item values behind a suite's metric, from the samples.jsonl its result folder keeps: what makes a
comparison of two measurements on the same items paired.

| suite kind | metric | item | value (weight) |
|---|---|---|---|
| perplexity | `kl_mean`, `nll_mean`, `perplexity`, `same_top1` | document (`id`) | its mean per token (its tokens) |
| benchmark | `<task>/<metric>` | (task, doc_id) | correct or not |
| toolcall | `task_success` | (scenario id, sample) | the episode succeeded or not |

`perplexity` is exp(mean NLL): it is compared on the NLL (`log_scale`), and the caller converts back.
A metric not in this table has no per-item values here; it is compared through the two stderrs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from quantgate.core.record import SAMPLES_FILE, ResultRecord


@dataclass(frozen=True)
class Items:
    values: dict[object, float]  # item key -> value
    weights: dict[object, float]  # item key -> weight (1 for a share)
    binary: bool  # values are 0/1 outcomes, compared by McNemar's test
    scale: float = 1.0  # metric = scale x weighted mean (100 for a percentage)
    log_scale: bool = False  # metric = exp(weighted mean): perplexity from the NLL


def _rows(result: ResultRecord) -> list[dict] | None:
    if result.folder is None or not (result.folder / SAMPLES_FILE).is_file():
        return None
    path: Path = result.folder / SAMPLES_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _perplexity(rows: list[dict], metric: str) -> Items | None:
    if metric in ("nll_mean", "perplexity"):
        values = {r["id"]: r["nll_sum"] / r["tokens"] for r in rows}
    elif metric in ("kl_mean", "same_top1") and all(metric in r for r in rows):
        values = {r["id"]: float(r[metric]) for r in rows}
    else:
        return None
    weights = {r["id"]: float(r["tokens"]) for r in rows}
    return Items(values, weights, False, 100.0 if metric == "same_top1" else 1.0, metric == "perplexity")


def _benchmark(rows: list[dict], metric: str) -> Items | None:
    task = metric.split("/", 1)[0]
    mine = [r for r in rows if r.get("task") == task]
    if "/" not in metric or not mine or metric.rsplit("_", 1)[-1] in ("delta", "lost", "gained", "p"):
        return None
    return Items({r["doc_id"]: float(r["correct"]) for r in mine}, {r["doc_id"]: 1.0 for r in mine}, True)


def _toolcall(rows: list[dict], metric: str) -> Items | None:
    graded = [r for r in rows if r.get("success") is not None]
    if metric != "task_success" or not graded:
        return None
    keys = [(r["id"], r.get("sample", 0)) for r in graded]
    return Items(
        {k: float(r["success"]) for k, r in zip(keys, graded, strict=True)}, dict.fromkeys(keys, 1.0), True
    )


ITEMS = {"perplexity": _perplexity, "benchmark": _benchmark, "toolcall": _toolcall}


def items(result: ResultRecord, metric: str) -> Items | None:
    """The per-item values behind `metric` of `result`, when its suite keeps them and they are on disk."""
    read = ITEMS.get(result.suite_config.get("kind", ""))
    rows = _rows(result) if read else None
    return read(rows, metric) if rows else None
