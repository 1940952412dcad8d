"""Suites: a typed config, a measurement of one model, and a comparison against the baseline.

A suite kind registers itself explicitly (`register_suite`) with its pydantic config class
(extra="forbid", a `version`) and two functions:
  measure(config, backend, out_dir) -> Measurement   # one model; per-sample rows + metrics
  compare(config, variant, baseline) -> list[Metric] # the variant against the baseline on the same inputs
The baseline is measured once (cached under a key of its manifest and the suite's resolved config)
and its Measurement, including artifacts under its out_dir, is what `compare` reads.

A kind whose variant measurement needs the baseline's artifacts in hand also sets
  measure_against(config, backend, out_dir, baseline) -> Measurement
(perplexity: the variant's log-probabilities are gathered at the baseline's top-k token ids, as
llama.cpp's `--kl-divergence` reads its base file); the runner uses it for variants when set.

A kind whose comparison is only fair in one time window (latency) sets
  measure_beside(config, backend, out_dir, baseline, open_baseline) -> Measurement
and the runner, for an in-process baseline, hands it a function that loads the baseline beside the variant.

A kind that reads files its config does not name as Path fields sets
  inputs(config) -> {file: sha256}
(benchmark: every task YAML under `include_path` and each data file they name), so that a changed
file changes the baseline cache key and the nightly's result key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.backends.base import Backend
from quantgate.core.metrics import Metric
from quantgate.core.paths import PathName
from quantgate.core.strict import StrictModel


class SuiteConfig(StrictModel):
    """Common fields; each kind subclasses it. Unknown keys are rejected."""

    name: PathName  # names its results folder
    kind: str
    version: int


@dataclass
class Measurement:
    metrics: list[Metric]
    samples: list[dict[str, Any]]  # one JSON-serialisable row per sample (written as samples.jsonl)
    out_dir: Path  # where the suite wrote its artifacts (e.g. cached distributions)
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable details for summary.json


@dataclass(frozen=True)
class SuiteKind:
    kind: str
    config_class: type[SuiteConfig]
    measure: Callable[[SuiteConfig, Backend, Path], Measurement]
    compare: Callable[[SuiteConfig, Measurement, Measurement], list[Metric]]
    measure_against: Callable[[SuiteConfig, Backend, Path, Measurement], Measurement] | None = None
    # files the suite reads that are not Path fields of its config (e.g. lm-eval task YAMLs and their
    # data): name -> sha256, part of every cache and result key
    inputs: Callable[[SuiteConfig], dict[str, str]] | None = None
    # checks of its data files at load time (before any model): raises InputError
    validate: Callable[[SuiteConfig], None] | None = None
    # a variant measured with its baseline loaded beside it, in the same time window (latency):
    # (config, backend, out_dir, baseline measurement, a function that loads the baseline) -> Measurement
    measure_beside: (
        Callable[[SuiteConfig, Backend, Path, Measurement, Callable[[], Backend]], Measurement] | None
    ) = None


SUITE_KINDS: dict[str, SuiteKind] = {}


def register_suite(kind: SuiteKind) -> SuiteKind:
    if kind.kind in SUITE_KINDS:
        raise ValueError(f"suite kind {kind.kind!r} registered twice")
    SUITE_KINDS[kind.kind] = kind
    return kind


def suite_kind(kind: str) -> SuiteKind:
    if kind not in SUITE_KINDS:
        raise KeyError(f"unknown suite kind {kind!r}; known: {', '.join(sorted(SUITE_KINDS))}")
    return SUITE_KINDS[kind]
