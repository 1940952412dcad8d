"""Synthetic nightly results on disk, in the harness's layout (RESULTS/<checkpoint>/<suite>/summary.json),
and a small plan: one real variant and one canary in group "int4", a BF16 baseline named "tiny"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from quantgate.core.metrics import Metric
from quantgate.core.record import ModelRef, ResultRecord, write_record

PLAN = """\
version: 1
name: gate-test
model: models/tiny
variants:
  - {name: good, scheme: w4a16-g128, method: rtn, group: int4}
  - {name: bad, scheme: w2a16-g32, method: rtn, group: int4, canary: true}
suites: [perplexity, benchmark]
gates:
  - {metric: perplexity.perplexity, min_recovery: 95}
  - {metric: perplexity.kl_mean, max_value: 0.05}
  - metric: benchmark.acc
    max_difference: 0.05
    no_significant_regression: {p_value: benchmark.acc_mcnemar_p, alpha: 0.05}
"""


def write_result(
    root: Path,
    checkpoint: str,
    suite: str,
    metrics: list[Metric],
    comparison: list[Metric] | None,
    role: str = "variant",
) -> Path:
    folder = root / checkpoint / suite
    folder.mkdir(parents=True, exist_ok=True)
    record = ResultRecord(
        model=ModelRef(path=f"/checkpoints/{checkpoint}", identity="sha256:0", role=role),
        suite={"name": suite, "kind": suite, "version": 1},
        metrics=metrics,
        comparison=comparison,
    )
    write_record(folder, record)
    (folder / "samples.jsonl").write_text('{"id": 0}\n')
    return folder


def write_nightly(
    root: Path, ppl: dict[str, float], kl: dict[str, float], acc: dict[str, float], p: dict[str, float]
) -> Path:
    """Baseline "tiny" (perplexity 10, acc 0.8) and each variant's numbers by plan name (good, bad)."""
    write_result(
        root, "tiny", "perplexity", [Metric("perplexity", 10.0, "lower", 0.1, n=500)], None, "baseline"
    )
    write_result(root, "tiny", "benchmark", [Metric("acc", 0.8, "higher", 0.02, n=400)], None, "baseline")
    for name in ppl:
        checkpoint = f"tiny-{'w4a16-g128' if name == 'good' else 'w2a16-g32'}-rtn"
        write_result(
            root,
            checkpoint,
            "perplexity",
            [Metric("perplexity", ppl[name], "lower", 0.1, n=500)],
            [Metric("kl_mean", kl[name], "lower", 0.001, "nats/token", 500)],
        )
        write_result(
            root,
            checkpoint,
            "benchmark",
            [Metric("acc", acc[name], "higher", 0.02, n=400)],
            [Metric("acc_mcnemar_p", p[name], "none", n=40)],
        )
    return root


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    return path


@pytest.fixture
def nightly(tmp_path: Path) -> Callable[..., Path]:
    """nightly(good=(ppl, kl, acc, p), bad=(...)) -> the results root."""

    def make(**variants: tuple[float, float, float, float]) -> Path:
        columns = list(zip(*variants.values(), strict=True))
        by_name = [dict(zip(variants, column, strict=True)) for column in columns]
        return write_nightly(tmp_path / "results", *by_name)

    return make
