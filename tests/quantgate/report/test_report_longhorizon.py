"""The shipped plan's long-horizon gates on the values the suite measured (docs/toolcall.md): every real
variant passes them, both canaries fail one; the report draws the survival curves."""

from __future__ import annotations

from pathlib import Path

from quantgate.core.metrics import Metric
from quantgate.core.record import ModelRef, ResultRecord
from quantgate.gates.evaluate import evaluate
from quantgate.plan import load_plan
from quantgate.report.data import gather
from quantgate.report.plots import longhorizon_survival

ROOT = Path(__file__).resolve().parents[3]
# variant: (disagreements of 49 steps, Wilson 95 % low, high, action KL): suites/longhorizon.yaml, float32
MEASURED = {
    "kimi-k2-thinking-int4": (12, 0.1460, 0.3809, 0.0010),
    "kimi-k2-thinking-int4-gptq": (11, 0.1302, 0.3588, 0.0008),
    "w4a16-g128": (20, 0.2822, 0.5475, 0.0067),
    "w8a16": (2, 0.0113, 0.1371, 0.0002),
    "fp8-block": (12, 0.1460, 0.3809, 0.0018),
    "w3a16-g32": (18, 0.2467, 0.5073, 0.0043),
    "w2a16-g32": (33, 0.5338, 0.7879, 0.0201),
}


def _record(checkpoint: str, comparison: list[Metric], role: str = "variant") -> ResultRecord:
    return ResultRecord(model=ModelRef(path=f"/nowhere/{checkpoint}", identity="i", role=role),
                        suite={"name": "longhorizon", "kind": "longhorizon", "version": 1},
                        metrics=[Metric("steps_scored", 49.0, "none", n=49)], comparison=comparison)


def test_canaries_fail_the_long_horizon_gates_and_real_variants_pass():
    plan = load_plan(ROOT / "plans" / "nightly.yaml")
    results = [_record(plan.baseline_name, [], role="baseline")]
    for variant in plan.variants:
        misses, low, high, kl = MEASURED[variant.name]
        results.append(_record(plan.checkpoint_name(variant), [
            Metric("disagreement_rate", misses / 49, "lower", n=49),
            Metric("disagreement_rate_low", low, "lower", n=49),
            Metric("disagreement_rate_high", high, "lower", n=49),
            Metric("action_kl_mean", kl, "lower", n=49),
        ]))
    report = evaluate(plan, results)
    rows = [row for row in report.rows if row.metric.startswith("longhorizon.")]
    failed = {row.variant for row in rows if row.verdict == "fail"}
    assert {row.variant for row in rows} == set(MEASURED)
    assert failed == {"w3a16-g32", "w2a16-g32"}, [row.reason for row in rows if row.verdict == "fail"]
    png = longhorizon_survival(gather(plan, results, report, "n1"))
    assert png is not None and png.startswith(b"\x89PNG")
