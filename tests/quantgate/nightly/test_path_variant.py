"""A plan variant may name a checkpoint made elsewhere (`path:`): the nightly measures and gates it
like a built one, and the report says where each variant came from."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quant.build import QuantizeRequest, quantize
from quant.schemes import get_scheme
from quantgate.cli import main
from quantgate.core.checkpoint import MANIFEST_NAME, stored_bits_per_weight
from quantgate.core.manifest import load_manifest
from quantgate.nightly.matrix import Shard
from quantgate.nightly.run import NightlyRequest, run_nightly

SUITE = """\
kind: perplexity
version: 1
data: {data}
context_length: 64
stride: 64
top_k: 16
batch_size: 8
max_documents: 4
"""
PLAN = """\
version: 1
name: path-variants
model: {model}
variants:
  - {{name: elsewhere-w4, path: elsewhere/w4a16, group: int4}}
  - {{name: built-int4, scheme: kimi-k2-thinking-int4, method: rtn, group: int4, checkpoint: built-int4}}
suites: [{suite}]
gates:
  - {{metric: ppl.kl_mean, max_value: 0.5}}
"""


@pytest.fixture
def plan_dir(bundled_model: Path, tmp_path: Path) -> Path:
    """A plan beside a w4a16 checkpoint of the bundled model made by quantgate, then copied elsewhere
    without its manifest (as any checkpoint made by another tool)."""
    made = quantize(QuantizeRequest(bundled_model, get_scheme("w4a16-g128"), out=tmp_path / "made")).path
    shutil.copytree(made, tmp_path / "elsewhere" / "w4a16", ignore=shutil.ignore_patterns(MANIFEST_NAME))
    data = bundled_model.parents[1] / "suites" / "data" / "tinyk2" / "heldout_text.jsonl"
    (tmp_path / "ppl.yaml").write_text(SUITE.format(data=data))
    (tmp_path / "plan.yaml").write_text(PLAN.format(model=bundled_model, suite=tmp_path / "ppl.yaml"))  # absolute
    return tmp_path


def test_a_checkpoint_made_elsewhere_is_measured_gated_and_named(plan_dir: Path, mlflow_server: str) -> None:
    outcome = run_nightly(NightlyRequest(
        plan_path=plan_dir / "plan.yaml", shard=Shard(1, 1), state=plan_dir / "state",
        reports=plan_dir / "reports", cache_dir=plan_dir / "cache", tracking_uri=mlflow_server, threads=2,
    ))  # fmt: skip
    measured = {(r.variant, r.suite) for r in outcome.results}
    assert ("elsewhere-w4", "ppl") in measured and ("built-int4", "ppl") in measured  # named as in the plan
    stored = {p.parent.parent.relative_to(plan_dir / "state" / "results") for p in plan_dir.rglob("summary.json")
              if (plan_dir / "state" / "results") in p.parents}  # fmt: skip
    assert stored == {Path(c) / "ppl" for c in ("kimi-k2-tiny", "elsewhere-w4", "built-int4")}, stored  # by name
    assert (plan_dir / "ppl.yaml").is_file()  # an absolute suite path once named the store's folder: it is a file
    kl = {r.variant: r.metric("kl_mean").value for r in outcome.results if r.metric("kl_mean")}
    assert 0 < kl["built-int4"] < kl["elsewhere-w4"] < 0.5  # w4a16 on every Linear drifts further
    assert {row.variant: row.verdict for row in outcome.gates.rows} == {"elsewhere-w4": "pass", "built-int4": "pass"}
    report = (outcome.report_dir / "report.md").read_text()
    assert f"made elsewhere: {plan_dir / 'elsewhere' / 'w4a16'}" in report
    assert "int4 group 128 sym (pack-quantized)" in report  # its scheme, from its quantization_config
    assert "built by quantgate: kimi-k2-thinking-int4, rtn" in report


def test_a_path_that_is_not_a_checkpoint_is_one_line_exit_2(plan_dir: Path, capsys) -> None:
    (plan_dir / "elsewhere" / "empty").mkdir()
    for target, why in (("empty", "not a checkpoint directory (no config.json: "), ("missing", "no such folder")):
        text = (plan_dir / "plan.yaml").read_text().replace("elsewhere/w4a16", f"elsewhere/{target}")
        (plan_dir / "bad.yaml").write_text(text)
        args = ["nightly", "--plan", str(plan_dir / "bad.yaml"), "--reports", str(plan_dir / "reports")]
        assert main(args) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1
        assert f"{plan_dir / 'bad.yaml'}: variants.0.path: " in error and why in error, error
        assert not (plan_dir / "reports").exists()


def test_inspect_describes_a_checkpoint_made_elsewhere(plan_dir: Path, capsys) -> None:
    assert main(["inspect", str(plan_dir / "elsewhere" / "w4a16")]) == 0
    text = capsys.readouterr().out
    assert "made elsewhere (pack-quantized, weights int4 group 128 sym); no quantgate.json" in text
    made = load_manifest(plan_dir / "made").bits_per_weight  # counted from the shards, as the manifest has it
    counted = f"bits/weight {made.quantized:.3f} on quantized weights, {made.overall:.3f} overall (from the shards)"
    assert counted in text
    assert stored_bits_per_weight(plan_dir / "elsewhere" / "w4a16") == (made.quantized, made.overall)
    rows = {line.split()[0]: line for line in text.splitlines() if line[:1].isalpha()}
    assert "int4 group 128 sym" in rows["routed_experts"] and "int4 group 128 sym" in rows["attention"]
    assert "bf16 (kept)" in rows["lm_head"] and "bf16 (kept)" in rows["router"]
