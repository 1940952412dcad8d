"""Bad block-FP8 sources: scales missing, mis-shaped, of the wrong dtype, non-finite or without their weight,
a weight_block_size the scales do not fit, a malformed fp8 quantization_config, NaN in an FP8 weight.
Each through `quantgate quantize` (RTN, GPTQ or the bf16 target): one line naming the file and tensor
or field, exit status 2, nothing written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.adversarial.checkpoint_cases import INDEX, replace_tensor

EXPERT = "model.layers.1.mlp.experts.0.down_proj.weight"
SCALE = f"{EXPERT}_scale_inv"
MQA = "model.layers.1.self_attn.kv_a_proj_with_mqa.weight"  # [576, 128]: scales [5, 1]


@pytest.fixture
def fp8_source(fp8_model: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "src-fp8"
    shutil.copytree(fp8_model, copy)
    return copy


def shard_of(src: Path, name: str) -> str:
    return json.loads((src / INDEX).read_text())["weight_map"][name]


def drop_tensor(name: str) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        shard = src / shard_of(src, name)
        tensors = load_file(shard)
        del tensors[name]
        save_file(tensors, shard, metadata={"format": "pt"})
        index = json.loads((src / INDEX).read_text())
        del index["weight_map"][name]
        (src / INDEX).write_text(json.dumps(index))

    return mutate


def add_tensor(name: str, owner: str, value: torch.Tensor) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        shard = shard_of(src, owner)
        tensors = load_file(src / shard)
        tensors[name] = value
        save_file(tensors, src / shard, metadata={"format": "pt"})
        index = json.loads((src / INDEX).read_text())
        index["weight_map"][name] = shard
        (src / INDEX).write_text(json.dumps(index))

    return mutate


def fp8_config(**changes: object) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        config = json.loads((src / "config.json").read_text())
        config["quantization_config"] |= changes
        (src / "config.json").write_text(json.dumps(config))

    return mutate


def nan_fp8_weight() -> torch.Tensor:
    weight = torch.zeros(128, 128, dtype=torch.float8_e4m3fn)
    weight.view(torch.uint8)[3, 5] = 0x7F  # float8_e4m3fn's NaN
    return weight


def scale_of(value: float) -> Callable[[], torch.Tensor]:
    return lambda: torch.tensor([[value]], dtype=torch.float32)


SRC_SHARD = "{src}/model-0000"
CASES = [  # (id, mutate, extra argv, names the error must hold)
    ("scale-missing", drop_tensor(SCALE), (), [EXPERT, SCALE, SRC_SHARD]),
    ("scale-misshaped", replace_tensor(SCALE, lambda: torch.ones(2, 2)), (), [SCALE, "[2, 2]", "[1, 1]"]),
    ("scale-bf16", replace_tensor(SCALE, lambda: torch.ones(1, 1, dtype=torch.bfloat16)), (), [SCALE, "F32"]),
    ("scale-nan", replace_tensor(SCALE, scale_of(float("nan"))), (), [SCALE, SRC_SHARD, "NaN"]),
    ("scale-inf", replace_tensor(SCALE, scale_of(float("inf"))), (), [SCALE, "NaN or Inf"]),
    ("scale-inf-gptq", replace_tensor(SCALE, scale_of(float("inf"))), ("--method", "gptq"), [SCALE]),
    ("scale-nan-bf16-target", replace_tensor(SCALE, scale_of(float("nan"))), ("bf16",), [SCALE]),
    ("scale-partial-rows-missing", replace_tensor(f"{MQA}_scale_inv", lambda: torch.ones(4, 1)), (),
     [f"{MQA}_scale_inv", "[4, 1]", "[5, 1]"]),
    ("scale-without-weight", add_tensor("lm_head.weight_scale_inv", EXPERT, torch.ones(16, 1)), (),
     ["lm_head.weight_scale_inv", "BF16"]),
    ("scale-of-absent-weight", add_tensor("model.layers.1.ghost.weight_scale_inv", EXPERT, torch.ones(1, 1)), (),
     ["model.layers.1.ghost.weight_scale_inv", "absent"]),
    ("weight-nan", replace_tensor(EXPERT, nan_fp8_weight), (), [EXPERT, "NaN"]),
    ("block-size-other-than-scales", fp8_config(weight_block_size=[64, 64]), (), ["weight_scale_inv", "[64, 64]"]),
    ("block-size-malformed", fp8_config(weight_block_size=[128]), (), ["{src}/config.json", "weight_block_size"]),
    ("fmt-e5m2", fp8_config(fmt="e5m2"), (), ["{src}/config.json", "quantization_config.fmt"]),
    ("activation-static", fp8_config(activation_scheme="static"), (), ["activation_scheme"]),
    ("config-unknown-key", fp8_config(weight_blok_size=[128, 128]), (), ["quantization_config.weight_blok_size"]),
]


@pytest.mark.parametrize(("mutate", "extra", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_fp8_source_is_one_line_exit_2_and_writes_nothing(mutate, extra, names, refused, fp8_source, tmp_path):
    mutate(tmp_path, fp8_source)
    scheme, options = (extra[0], extra[1:]) if extra[:1] == ("bf16",) else ("kimi-k2-thinking-int4", extra)
    argv = ["quantize", "--model", fp8_source, "--scheme", scheme, "--out", tmp_path / "out", *options]
    refused(argv, *[n.format(src=fp8_source) for n in names])
