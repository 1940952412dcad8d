"""DeepSeek block FP8 checkpoints (the DeepSeek-V3/R1 and Kimi K2 releases): their format and its dequantization.

Such a checkpoint's config.json carries
`quantization_config: {quant_method: fp8, fmt: e4m3, activation_scheme: dynamic, weight_block_size: [128, 128]}`;
each quantized Linear is stored as `NAME.weight` (float8_e4m3fn, [out, in]) plus `NAME.weight_scale_inv`
(float32, [ceil(out/128), ceil(in/128)], one scale per block, edge blocks partial); embeddings, norms,
the router and lm_head stay BF16. A weight is defined as DeepSeek's reference conversion
(`inference/fp8_cast_bf16.py` with `kernel.weight_dequant`) computes it: `weight.float()` times its
block's scale in float32, then cast to the default dtype (BF16 there). `dequantize_fp8` is that
computation in torch, on whole weights or on block-aligned runs of rows.

The format is read here, below quant (which quantizes from it) and harness (which measures it).
torch is imported only by `dequantize_fp8`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from quantgate.core.errors import InputError
from quantgate.core.strict import StrictModel

if TYPE_CHECKING:
    import torch

FP8_METHOD = "fp8"
SCALE_SUFFIX = "_scale_inv"  # `...q_a_proj.weight` -> `...q_a_proj.weight_scale_inv`
FP8_DTYPE = "F8_E4M3"  # safetensors' spelling of float8_e4m3fn
SCALE_DTYPE = "F32"
BF16_TARGET = "bf16"  # `quantize --scheme bf16`: a block-FP8 source written as BF16 (nothing quantized)
CONFIG_KEYS = ("quant_method", "fmt", "activation_scheme", "weight_block_size")


class BlockFP8(StrictModel):
    """A block-FP8 checkpoint's format, as its quantization_config states it (and the manifest records it)."""

    quant_method: Literal["fp8"] = FP8_METHOD
    fmt: Literal["e4m3"] = "e4m3"
    activation_scheme: Literal["dynamic"] = "dynamic"
    weight_block_size: tuple[int, int]

    def describe(self) -> str:
        rows, cols = self.weight_block_size
        return f"fp8 ({self.fmt}, block {rows}x{cols})"

    def scale_shape(self, weight_shape: tuple[int, ...]) -> tuple[int, int]:
        """One scale per block, partial edge blocks included."""
        rows, cols = weight_shape
        return math.ceil(rows / self.weight_block_size[0]), math.ceil(cols / self.weight_block_size[1])


def is_block_fp8_config(config: dict) -> bool:
    quantization = config.get("quantization_config")
    return isinstance(quantization, dict) and quantization.get("quant_method") == FP8_METHOD


def block_fp8_of(config: dict, config_path: Path) -> BlockFP8 | None:
    """The checkpoint's block-FP8 format, None when it is not one; a malformed fp8 config is an InputError."""
    if not is_block_fp8_config(config):
        return None
    quantization = config["quantization_config"]
    where = f"{config_path}: quantization_config"
    if unknown := sorted(set(quantization) - set(CONFIG_KEYS)):
        raise InputError(f"{where}.{unknown[0]}: unknown key for quant_method fp8 (known: {', '.join(CONFIG_KEYS)})")
    if quantization.get("fmt") != "e4m3":
        raise InputError(f"{where}.fmt: {quantization.get('fmt')!r}; DeepSeek block FP8 is 'e4m3'")
    if quantization.get("activation_scheme", "dynamic") != "dynamic":
        raise InputError(
            f"{where}.activation_scheme: {quantization['activation_scheme']!r}; only 'dynamic' (no stored activation "
            "scales) is read"
        )
    block = quantization.get("weight_block_size")
    if (
        not isinstance(block, list)
        or len(block) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)
    ):
        raise InputError(f"{where}.weight_block_size: {block!r}; expected [rows, cols], two positive integers")
    return BlockFP8(weight_block_size=(block[0], block[1]))


def scale_name(weight_name: str) -> str:
    return weight_name + SCALE_SUFFIX


def weight_name_of_scale(name: str) -> str | None:
    """`X.weight_scale_inv` -> `X.weight`; None for any other tensor name."""
    return name.removesuffix(SCALE_SUFFIX) if name.endswith(".weight" + SCALE_SUFFIX) else None


@dataclass(frozen=True)
class ShardTensor:
    """A tensor as a shard's header describes it."""

    name: str
    shard: str
    shape: tuple[int, ...]
    dtype: str


def read_block_fp8(model_dir: Path, fp8: BlockFP8) -> tuple[dict[str, ShardTensor], dict[str, ShardTensor]]:
    """(every tensor but the scales, the scales by their FP8 weight) of a block-FP8 checkpoint, from its
    index (or single file) and the shards' headers, checked as `split_scales` does."""
    from quantgate.core.checkpoint import INDEX_NAME, SINGLE_FILE_NAME, read_weight_map, safetensors_header

    single = not (model_dir / INDEX_NAME).exists() and (model_dir / SINGLE_FILE_NAME).is_file()
    shards = [SINGLE_FILE_NAME] if single else sorted(set(read_weight_map(model_dir).values()))
    tensors = {}
    for shard in shards:
        if not (model_dir / shard).is_file():
            raise InputError(f"{model_dir / shard}: missing (named in {INDEX_NAME})")
        for name, info in safetensors_header(model_dir / shard).items():
            if name != "__metadata__":
                tensors[name] = ShardTensor(name, shard, tuple(info["shape"]), info["dtype"])
    return tensors, split_scales(model_dir, fp8, tensors)


class TensorHeader(Protocol):
    """A tensor as a shard's header describes it (quant.source.TensorInfo is one)."""

    name: str
    shard: str  # file name in the checkpoint folder
    shape: tuple[int, ...]
    dtype: str  # safetensors' spelling


def split_scales(path: Path, fp8: BlockFP8, tensors: dict[str, TensorHeader]) -> dict[str, TensorHeader]:
    """Takes the `weight_scale_inv` tensors out of `tensors` (a checkpoint's, by name, from the shards'
    headers); returns them by the FP8 weight they scale. Every FP8 weight is 2-D with an F32 scale of
    one value per block of the config's `weight_block_size`; every scale has its FP8 weight. Anything
    else is an InputError naming the shard and the tensor."""
    scales = {}
    for name, info in sorted(tensors.items()):
        weight = weight_name_of_scale(name)
        if weight is None:
            continue
        owner = tensors.get(weight)
        if owner is None or owner.dtype != FP8_DTYPE:
            what = "absent" if owner is None else f"{owner.dtype}, not {FP8_DTYPE}"
            raise InputError(f"{path / info.shard}: tensor {name} scales {weight}, which is {what}")
        scales[weight] = info
    for scale in scales.values():
        del tensors[scale.name]
    block = list(fp8.weight_block_size)
    for name, info in sorted(tensors.items()):
        if info.dtype != FP8_DTYPE:
            continue
        where = path / info.shard
        if len(info.shape) != 2:
            raise InputError(f"{where}: tensor {name} ({FP8_DTYPE}) has shape {list(info.shape)}; an FP8 weight is 2-D")
        scale = scales.get(name)
        if scale is None:
            raise InputError(f"{where}: tensor {name} ({FP8_DTYPE}) has no {scale_name(name)} (its block scales)")
        expected = fp8.scale_shape(info.shape)
        if scale.dtype != SCALE_DTYPE:
            raise InputError(
                f"{path / scale.shard}: tensor {scale.name} has dtype {scale.dtype}; block scales are {SCALE_DTYPE}"
            )
        if scale.shape != expected:
            raise InputError(
                f"{path / scale.shard}: tensor {scale.name} has shape {list(scale.shape)}; weight {list(info.shape)} "
                f"in blocks {block} (config.json weight_block_size) needs {list(expected)}"
            )
    return scales


def dequantize_fp8(
    weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int], first_row: int = 0
) -> torch.Tensor:
    """float32 weights of FP8 `weight` [R, C] (rows first_row .. first_row+R of the tensor; first_row a
    multiple of the block height) given the tensor's whole `scale_inv` [ceil(rows/b0), ceil(C/b1)]:
    `weight.float() * scale` per block, exactly DeepSeek's `weight_dequant` before its cast."""
    rows, cols = weight.shape
    height, width = block
    if first_row % height:
        raise ValueError(f"first_row {first_row} is not a multiple of the block height {height}")
    scale = scale_inv[first_row // height : (first_row + rows + height - 1) // height]  # [r_b, c_b]
    scale = scale.repeat_interleave(height, 0)[:rows].repeat_interleave(width, 1)[:, :cols]  # [R, C]
    return weight.float() * scale


FP8_MAX = 448.0  # the largest finite float8_e4m3fn


def quantize_fp8(weight: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8_e4m3fn weight [R, C], float32 weight_scale_inv [ceil(R/b0), ceil(C/b1)]) of a 2-D weight,
    as DeepSeek's `kernel.weight_quant` makes a release: per block, scale = amax(|x|) / 448 in float32
    and FP8 = x / scale. An all-zero block (where that divides by zero) gets scale 1. For making FP8
    checkpoints to test and benchmark with (tinyk2.make_fp8, bench/make_synthetic_moe.py --fp8)."""
    import torch

    rows, cols = weight.shape
    height, width = block
    x = weight.float()
    padded = x.new_zeros(-(-rows // height) * height, -(-cols // width) * width)
    padded[:rows, :cols] = x.abs()
    amax = padded.view(padded.shape[0] // height, height, padded.shape[1] // width, width).amax(dim=(1, 3))
    scale = amax / FP8_MAX  # [R_b, C_b]
    scale[scale == 0] = 1.0
    expanded = scale.repeat_interleave(height, 0)[:rows].repeat_interleave(width, 1)[:, :cols]  # [R, C]
    return (x / expanded).to(torch.float8_e4m3fn), scale
