"""Block-FP8 sources (DeepSeek-V3 / Kimi K2 releases): quantized straight from FP8, bit-identical to
DeepSeek's reference conversion to BF16 followed by quantizing the BF16 copy; the `bf16` target;
the `kimi-k2-tiny-fp8` fixture's layout.

`reference_fp8_cast_bf16` is a straight port of DeepSeek-V3's `inference/fp8_cast_bf16.py` to torch on
the CPU: the same loop over shards, the same `_scale_inv` lookup through the index, the same
`save_file` per shard and index rewrite; its `weight_dequant` runs the triton kernel's program for
each 128x128 block (load as float32, times the block's scale `s[pid_m * n + pid_n]`, stored into a
tensor of the default dtype, which the script sets to BF16). The config and tokenizer files, which
the script leaves to the user, are copied by hand, the config without its quantization_config.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from glob import glob
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from quant.build import QuantizeRequest, quantize
from quant.gptq.run import GPTQRequest, quantize_gptq
from quant.schemes import get_scheme
from quantgate.cli import main
from quantgate.core.fp8 import BlockFP8, dequantize_fp8
from quantgate.core.gptq import CalibrationSpec
from quantgate.core.manifest import MANIFEST_NAME, load_manifest

INDEX = "model.safetensors.index.json"
TINY = CalibrationSpec(samples=2, sample_length=64)


# -- DeepSeek's reference conversion, ported -------------------------------------------------------
def reference_weight_dequant(x: torch.Tensor, s: torch.Tensor, block_size: int = 128) -> torch.Tensor:
    """kernel.weight_dequant: one program per (pid_m, pid_n) block; y = x.to(float32) * s, stored as bf16."""
    assert x.is_contiguous() and s.is_contiguous() and x.dim() == 2 and s.dim() == 2
    M, N = x.size()
    y = torch.empty_like(x, dtype=torch.bfloat16)  # torch.get_default_dtype() under set_default_dtype(bf16)
    n = math.ceil(N / block_size)
    flat_s = s.view(-1)
    for pid_m in range(math.ceil(M / block_size)):
        for pid_n in range(n):
            rows = slice(pid_m * block_size, min((pid_m + 1) * block_size, M))  # the mask offs_m < M
            cols = slice(pid_n * block_size, min((pid_n + 1) * block_size, N))
            y[rows, cols] = x[rows, cols].to(torch.float32) * flat_s[pid_m * n + pid_n]
    return y


def reference_fp8_cast_bf16(fp8_path: Path, bf16_path: Path) -> None:
    """inference/fp8_cast_bf16.py's main(), on the CPU, then the user's config edit and file copies."""
    os.makedirs(bf16_path, exist_ok=True)
    model_index = json.loads((fp8_path / INDEX).read_text())
    weight_map = model_index["weight_map"]
    loaded_files: dict[str, dict[str, torch.Tensor]] = {}
    fp8_weight_names = []

    def get_tensor(tensor_name: str) -> torch.Tensor:
        file_name = weight_map[tensor_name]
        if file_name not in loaded_files:
            loaded_files[file_name] = load_file(os.path.join(fp8_path, file_name))
        return loaded_files[file_name][tensor_name]

    for safetensor_file in sorted(glob(os.path.join(fp8_path, "*.safetensors"))):
        file_name = os.path.basename(safetensor_file)
        current_state_dict = load_file(safetensor_file)
        loaded_files[file_name] = current_state_dict
        new_state_dict = {}
        for weight_name, weight in current_state_dict.items():
            if weight_name.endswith("_scale_inv"):
                continue
            elif weight.element_size() == 1:  # FP8 weight
                scale_inv = get_tensor(f"{weight_name}_scale_inv")  # the script warns and keeps FP8 if missing
                fp8_weight_names.append(weight_name)
                new_state_dict[weight_name] = reference_weight_dequant(weight, scale_inv)
            else:
                new_state_dict[weight_name] = weight
        save_file(new_state_dict, os.path.join(bf16_path, file_name))
        if len(loaded_files) > 2:
            del loaded_files[next(iter(loaded_files))]
    for weight_name in fp8_weight_names:
        weight_map.pop(f"{weight_name}_scale_inv", None)
    (bf16_path / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
    # what the script leaves to the user: the config without quantization_config, the tokenizer files
    config = json.loads((fp8_path / "config.json").read_text())
    del config["quantization_config"]
    (bf16_path / "config.json").write_text(json.dumps(config, indent=2))
    for path in fp8_path.iterdir():
        if path.suffix not in (".safetensors",) and path.name not in (INDEX, "config.json"):
            shutil.copyfile(path, bf16_path / path.name)


@pytest.fixture(scope="module")
def reference_bf16(fp8_model: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "kimi-k2-tiny-fp8-reference-bf16"
    reference_fp8_cast_bf16(fp8_model, out)
    return out


def output_files(path: Path) -> dict[str, bytes]:
    """Every file of a checkpoint but its manifest (which names the source it was made from)."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != MANIFEST_NAME}


# -- the dequantization ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(128, 256), (200, 300), (576, 128), (5, 7)])
def test_dequantize_is_the_reference_kernel_on_partial_blocks(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    weight = (torch.randn(shape) * 100).to(torch.float8_e4m3fn)
    scale = torch.rand(math.ceil(shape[0] / 128), math.ceil(shape[1] / 128)) * 1e-3
    want = reference_weight_dequant(weight, scale)
    assert torch.equal(dequantize_fp8(weight, scale, (128, 128)).to(torch.bfloat16).view(torch.int16),
                       want.view(torch.int16))  # fmt: skip
    rows = [dequantize_fp8(weight[r : r + 128], scale, (128, 128), first_row=r) for r in range(0, shape[0], 128)]
    assert torch.equal(torch.cat(rows).to(torch.bfloat16).view(torch.int16), want.view(torch.int16))


# -- the fixture ---------------------------------------------------------------------------------------
def test_fixture_has_the_release_layout(fp8_model: Path, bundled_model: Path) -> None:
    config = json.loads((fp8_model / "config.json").read_text())
    assert config["quantization_config"] == {
        "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128],
    }  # fmt: skip
    weight_map = json.loads((fp8_model / INDEX).read_text())["weight_map"]
    source_map = json.loads((bundled_model / INDEX).read_text())["weight_map"]
    dtypes, shapes = {}, {}
    for shard in sorted(set(weight_map.values())):
        with safe_open(fp8_model / shard, framework="pt") as handle:
            for name in handle.keys():
                assert weight_map[name] == shard
                dtypes[name], shapes[name] = handle.get_slice(name).get_dtype(), handle.get_slice(name).get_shape()
    fp8 = {n for n, d in dtypes.items() if d == "F8_E4M3"}
    assert {n.rsplit(".", 2)[-2] for n in fp8} == {
        "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    }  # fmt: skip
    assert any(".mlp.experts." in n for n in fp8) and any(".mlp.shared_experts." in n for n in fp8)
    assert any(n.startswith("model.layers.0.mlp.gate_proj") for n in fp8)  # the dense MLP
    bf16 = {n for n, d in dtypes.items() if d == "BF16"}
    kept = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.1.mlp.gate.weight"}
    assert kept <= bf16
    assert all("norm" in n or n.endswith(("embed_tokens.weight", "lm_head.weight", "mlp.gate.weight")) for n in bf16)
    for name in fp8:
        scale = f"{name}_scale_inv"
        assert dtypes[scale] == "F32" and weight_map[scale] == weight_map[name] == source_map[name]
        assert shapes[scale] == [math.ceil(shapes[name][0] / 128), math.ceil(shapes[name][1] / 128)]
    assert shapes["model.layers.1.self_attn.kv_a_proj_with_mqa.weight"] == [576, 128]  # a partial edge block:
    assert shapes["model.layers.1.self_attn.kv_a_proj_with_mqa.weight_scale_inv"] == [5, 1]  # 576 = 4.5 x 128


# -- FP8 -> int4, straight and through the reference conversion --------------------------------------
def test_rtn_from_fp8_is_bit_identical_to_reference_conversion_then_rtn(
    fp8_model: Path, reference_bf16: Path, tmp_path: Path
) -> None:
    scheme = get_scheme("kimi-k2-thinking-int4")
    direct = quantize(QuantizeRequest(fp8_model, scheme, out=tmp_path / "direct", workers=2))
    converted = quantize(QuantizeRequest(reference_bf16, scheme, out=tmp_path / "converted", workers=2))
    assert output_files(direct.path) == output_files(converted.path)
    config = json.loads((direct.path / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    assert not any(name.endswith("_scale_inv") for name in json.loads((direct.path / INDEX).read_text())["weight_map"])
    assert direct.manifest.source_format == BlockFP8(weight_block_size=(128, 128))
    assert load_manifest(direct.path).source_format == direct.manifest.source_format
    assert converted.manifest.source_format is None
    assert '"source_format"' not in (converted.path / MANIFEST_NAME).read_text()  # BF16 sources: as before
    assert direct.manifest.bits_per_weight == converted.manifest.bits_per_weight


def test_gptq_from_fp8_is_bit_identical_to_reference_conversion_then_gptq(
    fp8_model: Path, reference_bf16: Path, tmp_path: Path
) -> None:
    scheme = get_scheme("kimi-k2-thinking-int4")
    outcomes = [
        quantize_gptq(GPTQRequest(model, scheme, out=tmp_path / name, calibration=TINY))
        for name, model in (("direct", fp8_model), ("converted", reference_bf16))
    ]
    assert output_files(outcomes[0].path) == output_files(outcomes[1].path)
    assert outcomes[0].manifest.source_format is not None and outcomes[0].manifest.method == "gptq"


def test_bf16_target_writes_the_reference_conversion(
    fp8_model: Path, reference_bf16: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "bf16"
    assert main(["quantize", "--model", str(fp8_model), "--scheme", "bf16", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    shards = sorted(p.name for p in reference_bf16.glob("*.safetensors"))
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards
    for shard in shards:
        ours, reference = load_file(out / shard), load_file(reference_bf16 / shard)
        assert ours.keys() == reference.keys()
        for name, tensor in reference.items():
            assert ours[name].dtype == tensor.dtype and torch.equal(ours[name].view(-1).view(torch.uint8),
                                                                    tensor.view(-1).view(torch.uint8)), name
    index = json.loads((out / INDEX).read_text())["weight_map"]
    assert index == json.loads((reference_bf16 / INDEX).read_text())["weight_map"]
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert json.loads((out / "quantgate.dequantized.json").read_text())["dequantized_from"] == str(fp8_model)
    # its int4 is the same as straight from FP8 (the record beside it is not copied on)
    direct = quantize(QuantizeRequest(fp8_model, get_scheme("w4a16-g128"), out=tmp_path / "direct"))
    via = quantize(QuantizeRequest(out, get_scheme("w4a16-g128"), out=tmp_path / "via"))
    assert output_files(direct.path) == output_files(via.path)


def test_bf16_target_refuses_a_bf16_source(bundled_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bf16"
    assert main(["quantize", "--model", str(bundled_model), "--scheme", "bf16", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json" in err and "BF16" in err and not out.exists()
