"""A plan whose baseline is an FP8 release (`kimi-k2-tiny-fp8`): the nightly builds its variant straight
from FP8, measures a checkpoint made elsewhere (`path:`) beside it, gates both against the FP8 baseline
and reaches a verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from quant.build import QuantizeRequest, quantize
from quant.schemes import get_scheme
from quantgate.core.checkpoint import MANIFEST_NAME
from quantgate.nightly.matrix import Shard
from quantgate.nightly.run import NightlyRequest, run_nightly
from tests.quantgate.nightly.test_path_variant import SUITE as PATH_VARIANT_SUITE

SUITE = PATH_VARIANT_SUITE.replace("max_documents: 4", "max_documents: 2")
PLAN = """\
version: 1
name: fp8-baseline
model: {model}                      # the FP8 release is the baseline
variants:
  - {{name: from-fp8-int4, scheme: kimi-k2-thinking-int4, method: rtn, group: int4, checkpoint: from-fp8-int4}}
  - {{name: elsewhere-w4, path: elsewhere/w4a16, group: int4}}
suites: [ppl.yaml]
gates:
  - {{metric: ppl.kl_mean, max_value: 0.5}}
"""


@pytest.fixture
def plan_dir(fp8_model: Path, bundled_model: Path, tmp_path: Path) -> Path:
    """The plan, and a w4a16 checkpoint quantgate made from the FP8 fixture, copied elsewhere without its
    manifest (as one made by another tool)."""
    made = quantize(QuantizeRequest(fp8_model, get_scheme("w4a16-g128"), out=tmp_path / "made")).path
    shutil.copytree(made, tmp_path / "elsewhere" / "w4a16", ignore=shutil.ignore_patterns(MANIFEST_NAME))
    data = bundled_model.parents[1] / "suites" / "data" / "tinyk2" / "heldout_text.jsonl"
    (tmp_path / "ppl.yaml").write_text(SUITE.format(data=data))
    (tmp_path / "plan.yaml").write_text(PLAN.format(model=fp8_model))
    return tmp_path


def test_a_plan_with_an_fp8_baseline_reaches_a_verdict(plan_dir: Path, fp8_model: Path, mlflow_server: str) -> None:
    outcome = run_nightly(NightlyRequest(
        plan_path=plan_dir / "plan.yaml", shard=Shard(1, 1), state=plan_dir / "state",
        reports=plan_dir / "reports", cache_dir=plan_dir / "cache", tracking_uri=mlflow_server, threads=2,
    ))  # fmt: skip
    kl = {r.variant: r.metric("kl_mean").value for r in outcome.results if r.metric("kl_mean")}
    assert 0 < kl["from-fp8-int4"] < kl["elsewhere-w4"] < 0.5
    assert {row.variant: row.verdict for row in outcome.gates.rows} == {"from-fp8-int4": "pass", "elsewhere-w4": "pass"}
    built = next(r for r in outcome.results if r.variant == "from-fp8-int4").manifest()
    assert built is not None and built.source_format is not None and built.source.name == fp8_model.name
    baseline = next(r for r in outcome.results if r.role == "baseline")
    environment = json.loads((baseline.folder / "environment.json").read_text())
    assert environment["backend"]["source_format"] == "fp8 (e4m3, block 128x128), dequantized to float32"
    report = (outcome.report_dir / "report.md").read_text()
    assert f"made elsewhere: {plan_dir / 'elsewhere' / 'w4a16'}" in report
    assert "built by quantgate: kimi-k2-thinking-int4, rtn" in report
    assert "| FP8 (baseline) | fp8 (e4m3, block 128x128) | kimi-k2-tiny-fp8 |" in report
