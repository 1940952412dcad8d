"""A block-FP8 release as baseline (or model) of the hf backend: dequantized by the backend to the compute
dtype (transformers 5.24 cannot: its CPU dequantization refuses partial edge blocks), the results say so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from harness.backends.hf import HFBackend
from quant.build import QuantizeRequest, quantize, write_bf16
from quant.schemes import get_scheme
from quantgate.cli import main
from quantgate.core.errors import InputError
from quantgate.core.fp8 import dequantize_fp8

MQA = "model.layers.1.self_attn.kv_a_proj_with_mqa.weight"  # [576, 128]: a partial edge block


def test_transformers_cannot_load_the_fixture_on_cpu(fp8_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    with pytest.raises(RuntimeError, match="conversion"):  # "Weight shape (576, 128) not divisible by scale grid"
        AutoModelForCausalLM.from_pretrained(fp8_model, dtype=torch.float32)


def test_hf_backend_dequantizes_to_the_compute_dtype(fp8_model: Path, tmp_path: Path) -> None:
    bf16 = HFBackend(fp8_model, dtype="bfloat16", threads=2)
    converted = HFBackend(write_bf16(fp8_model, tmp_path / "bf16"), dtype="bfloat16", threads=2)
    ours, reference = bf16.model.state_dict(), converted.model.state_dict()
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in reference)
    assert bf16.describe()["source_format"] == "fp8 (e4m3, block 128x128), dequantized to bfloat16"

    fp32 = HFBackend(fp8_model, dtype="float32", threads=2)
    shard = json.loads((fp8_model / "model.safetensors.index.json").read_text())["weight_map"][MQA]
    with safe_open(fp8_model / shard, framework="pt") as handle:
        want = dequantize_fp8(handle.get_tensor(MQA), handle.get_tensor(f"{MQA}_scale_inv"), (128, 128))
    assert torch.equal(fp32.model.state_dict()[MQA], want)  # the float32 product, not rounded to bf16
    assert "dequantized to float32" in fp32.describe()["source_format"]


def test_bad_scale_in_a_baseline_is_named(fp8_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "fp8"
    shutil.copytree(fp8_model, copy)
    name = "model.layers.2.mlp.shared_experts.up_proj.weight_scale_inv"
    shard = json.loads((copy / "model.safetensors.index.json").read_text())["weight_map"][name]
    tensors = load_file(copy / shard)
    tensors[name] = torch.ones(3, 1)
    save_file(tensors, copy / shard, metadata={"format": "pt"})
    with pytest.raises(InputError, match=f"{shard}: tensor {name} has shape \\[3, 1\\]"):
        HFBackend(copy, dtype="float32", threads=2)


def test_eval_against_an_fp8_baseline(fp8_model: Path, perplexity_suite, tmp_path: Path) -> None:
    variant = quantize(QuantizeRequest(fp8_model, get_scheme("kimi-k2-thinking-int4"), out=tmp_path / "int4")).path
    out = tmp_path / "results"
    suite = perplexity_suite(max_documents=2)
    argv = ["eval", "--model", str(variant), "--baseline", str(fp8_model), "--suite", str(suite),
            "--out", str(out), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / variant.name / "ppl" / "summary.json").read_text())
    assert summary["baseline"]["path"] == str(fp8_model)
    kl = {m["name"]: m for m in summary["comparison"]}["kl_mean"]
    assert 0 < kl["value"] < 1 and kl["n"] > 0
    environment = json.loads((out / fp8_model.name / "ppl" / "environment.json").read_text())
    assert environment["backend"]["dtype"] == "float32"
    assert environment["backend"]["source_format"] == "fp8 (e4m3, block 128x128), dequantized to float32"
