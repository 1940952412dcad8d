"""A measured number with its direction and uncertainty. Gates and reports read nothing else."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

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
