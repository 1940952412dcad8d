"""The nightly's work: a (checkpoint, suite) matrix in plan order, and deterministic shards of it.

`--shard i/n` takes the i-th of n contiguous, near-equal slices (1-based), so that n machines (CI
matrix jobs, Slurm array tasks) split the matrix without talking to each other and cover it exactly
once; contiguous slices keep a checkpoint's suites together, so each machine loads few models.
The baseline's pairs are in the matrix like any other: each shard measures the baseline only for
the suites its variant pairs need (the baseline cache makes that a load, not a measurement, after
the first time on a machine).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.suites.paths import suite_entry_name
from quantgate.core.errors import InputError
from quantgate.plan import Plan, PlanVariant

SHARD = re.compile(r"^(?P<index>\d+)/(?P<count>\d+)$")


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def whole(self) -> bool:
        return self.count == 1


def parse_shard(text: str) -> Shard:
    match = SHARD.match(text)
    if not match:
        raise InputError(f"--shard {text!r}: write it as i/n, e.g. 2/4")
    index, count = int(match["index"]), int(match["count"])
    if not 1 <= index <= count:
        raise InputError(f"--shard {text!r}: i must be between 1 and n")
    return Shard(index, count)


@dataclass(frozen=True)
class Pair:
    checkpoint: str  # folder name; what results are named after
    suite: str
    variant: PlanVariant | None  # None: the baseline

    @property
    def label(self) -> str:
        return f"{self.checkpoint} × {suite_entry_name(self.suite)}"


def matrix(plan: Plan) -> list[Pair]:
    """Every (checkpoint, suite) pair of the plan: the baseline first, then variants in plan order."""
    pairs = [Pair(plan.baseline_name, suite, None) for suite in plan.suites]
    for variant in plan.variants:
        pairs += [Pair(plan.checkpoint_name(variant), suite, variant) for suite in plan.suites]
    return pairs


def shard_of(pairs: list[Pair], shard: Shard) -> list[Pair]:
    start = (shard.index - 1) * len(pairs) // shard.count
    stop = shard.index * len(pairs) // shard.count
    return pairs[start:stop]
