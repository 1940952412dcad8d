"""A variants file builds several checkpoints: registered schemes and user-defined ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from quantgate.cli import main
from quantgate.core.families import ATTENTION, DENSE_MLP, SHARED_EXPERTS
from quantgate.core.manifest import load_manifest

VARIANTS = """\
version: 1
model: src
output_root: outputs
variants:
  - scheme: w3a16-g32
  - name: w4-g64-experts
    preset: W4A16
    group_size: 64
    ignore: [lm_head, attention, shared_experts, dense_mlp]
  - name: w4-asym-g64-attention
    weights: {num_bits: 4, type: int, symmetric: false, strategy: group, group_size: 64}
    targets: [attention]
"""


def test_variants_file_builds_each_variant(model_copy: Path, tmp_path: Path, capsys) -> None:
    shutil.copytree(model_copy, tmp_path / "src")
    (tmp_path / "variants.yaml").write_text(VARIANTS)
    assert main(["quantize", "--variants", str(tmp_path / "variants.yaml")]) == 0
    outputs = tmp_path / "outputs"
    assert sorted(p.name for p in outputs.iterdir()) == [
        "src-w3a16-g32-rtn",
        "src-w4-asym-g64-attention-rtn",
        "src-w4-g64-experts-rtn",
    ]
    experts = json.loads((outputs / "src-w4-g64-experts-rtn" / "config.json").read_text())
    config = experts["quantization_config"]
    assert config["ignore"] == ["lm_head", ATTENTION, SHARED_EXPERTS, DENSE_MLP]
    assert config["config_groups"]["group_0"]["weights"]["group_size"] == 64

    asym = load_manifest(outputs / "src-w4-asym-g64-attention-rtn")
    weights = asym.scheme.quantization_config["config_groups"]["group_0"]["weights"]
    assert weights["symmetric"] is False
    assert asym.scheme.quantization_config["config_groups"]["group_0"]["targets"] == [ATTENTION]
    index = json.loads(
        (outputs / "src-w4-asym-g64-attention-rtn" / "model.safetensors.index.json").read_text()
    )
    assert "model.layers.1.self_attn.o_proj.weight_zero_point" in index["weight_map"]
    assert "model.layers.1.mlp.experts.0.up_proj.weight" in index["weight_map"]  # not targeted

    assert main(["quantize", "--variants", str(tmp_path / "variants.yaml")]) == 0
    assert capsys.readouterr().out.count("reused ") == 3
