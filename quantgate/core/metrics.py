"""A measured number with its direction and uncertainty. Gates and reports read nothing else."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

LAYER_SUFFIX = re.compile(r"^(?P<metric>.+)\.layer_(?P<layer>\d+)$")  # a per-layer metric: <metric>.layer_<L>
Direction = Literal["higher", "lower", "none"]  # which way is better; "none": informational


@dataclass(frozen=True)
class Metric:
    name: str  # e.g. "perplexity", "kl_mean", "trigger_f1"
    value: float
    direction: Direction
    stderr: float | None = None  # standard error of `value`, when it has one
    unit: str = ""
    n: int | None = None  # samples behind the value

    def to_json(self) -> dict:
        return asdict(self)


def ratios_to_baseline(variant: list[Metric], baseline: list[Metric], names: dict[str, str]) -> list[Metric]:
    """variant / baseline for every metric whose stem (the name before its first ".") is in `names`,
    named `names[stem]` plus the metric's condition suffix; the ratio keeps its metric's direction."""
    base = {m.name: m for m in baseline}
    out = []
    for metric in variant:
        stem, _, condition = metric.name.partition(".")
        if stem in names and metric.name in base and base[metric.name].value:
            name = names[stem] + (f".{condition}" if condition else "")
            out.append(Metric(name, metric.value / base[metric.name].value, metric.direction, None, "x", metric.n))
    return out


def layer_table(metrics: list[Metric]) -> dict[str, dict[str, float]]:
    """Metrics named `<metric>.layer_<L>` as a per-layer table: {L: {metric: value}}, layers in order."""
    table: dict[str, dict[str, float]] = {}
    for metric in metrics:
        if match := LAYER_SUFFIX.match(metric.name):
            table.setdefault(match["layer"], {})[match["metric"]] = metric.value
    return dict(sorted(table.items(), key=lambda item: int(item[0])))
