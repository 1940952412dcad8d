"""The fused RTN path (quant.fast, quant.kernels: C and torch fallback) equals compressed-tensors bit for bit.

Exhaustive where the input space is small (every BF16 maximum for the scales, every BF16 value in
FP8's range for the cast); random and edge-case weights for the whole path: all-zero groups, exact
ties at .5, extreme and subnormal magnitudes, rows that do not fill a block. The streaming writer
gives the same bytes as safetensors' save_file.
"""

from __future__ import annotations

import pytest
import torch
from compressed_tensors.quantization.utils import calculate_qparams
from safetensors.torch import save_file

from quant import kernels
from quant.fast import _scale_constants, fast_rtn
from quant.rtn import compress_weight
from quant.schemes import get_scheme
from quant.stream import ShardWriter

FAST_SCHEMES = ("kimi-k2-thinking-int4", "w4a16-g128", "w8a16", "w8a8-int8", "w2a16-g32", "fp8-block")
IMPLEMENTATIONS = pytest.mark.parametrize("use_native", [True, False], ids=["c", "torch"])


def group_of(name: str):
    scheme = get_scheme(name)
    return scheme.quantization.model_copy(update={"format": scheme.format.value})


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def test_c_kernels_are_built() -> None:
    assert kernels.native() is not None, "no C compiler here: only the torch fallback would be tested"


@IMPLEMENTATIONS
@pytest.mark.parametrize("name", FAST_SCHEMES)
def test_scales_for_every_bf16_maximum(name: str, use_native: bool) -> None:
    group = group_of(name)
    finite = torch.arange(0, 0x7F80, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)  # every finite >= 0
    want, _ = calculate_qparams(-finite, finite, group.weights)
    got = kernels.symmetric_scales(finite, *_scale_constants(group), use_native=use_native)
    assert bits_equal(got, want.to(torch.bfloat16))


@IMPLEMENTATIONS
def test_fp8_cast_of_every_bf16_value_in_range(use_native: bool) -> None:
    every = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    values = every[every.float().abs() <= 448]  # NaN compares False: dropped
    x = torch.cat([values, values.new_zeros(-values.numel() % 128)]).reshape(-1, 128)  # [272, 128]
    scale = torch.ones(-(-x.shape[0] // 128), 1, dtype=torch.bfloat16)
    got = kernels.quant_fp8_block(x, scale, 128, 128, use_native=use_native)
    assert torch.equal(got, x.to(torch.float8_e4m3fn).view(torch.uint8))


def edge_weights(rows: int, cols: int, group: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    normal = torch.randn(rows, cols, generator=generator)
    weights = {"normal": (normal / 40).bfloat16(), "wide": (normal * 1e3).bfloat16()}
    zeros = (normal / 40).bfloat16()
    zeros[1, :group] = 0
    zeros[2] = 0
    zeros[5, group : 2 * group] = -0.0
    weights["zero groups"] = zeros
    # exact ties: group maximum 7.5 * 2^-4 gives the scale 2^-4 (int4), so (k + 0.5) * 2^-4 lands on .5
    ties = (torch.randint(-8, 8, (rows, cols), generator=generator) + 0.5) * 2.0**-4
    ties[:, ::group] = 7.5 * 2.0**-4
    weights["ties"] = ties.bfloat16()
    extreme = (normal * 1e-38).bfloat16()  # subnormal BF16
    extreme[0, 0] = torch.finfo(torch.bfloat16).max
    extreme[3, 1] = torch.finfo(torch.bfloat16).min
    extreme[4] = torch.finfo(torch.bfloat16).tiny
    weights["extreme"] = extreme
    weights["negative"] = -(normal.abs() / 40).bfloat16()
    return weights


@IMPLEMENTATIONS
@pytest.mark.parametrize("name", FAST_SCHEMES)
def test_fused_path_equals_compressed_tensors(name: str, use_native: bool) -> None:
    group = group_of(name)
    rows, cols = (200, 384) if name == "fp8-block" else (24, 256)  # 200: a partial 128-row block
    fast = fast_rtn(group, torch.bfloat16, (rows, cols))
    assert fast is not None
    for case, weight in edge_weights(rows, cols, group.weights.group_size or 128).items():
        want = compress_weight(weight, group)
        got = fast.compress(weight, use_native=use_native) | fast.constants(weight.shape)
        assert set(got) == set(want), case
        for local in want:
            assert bits_equal(got[local], want[local]), (case, local)
            spec = fast.specs(weight.shape)[local]
            assert spec.dtype == want[local].dtype and spec.shape == want[local].shape
        # a block of rows at a time gives the same rows
        split = fast.row_block * (rows // fast.row_block // 2 or 1)
        top, bottom = fast.compress(weight[:split], use_native), fast.compress(weight[split:], use_native)
        for local in top:
            assert bits_equal(torch.cat([top[local], bottom[local]]), want[local]), (case, local, "split")


@IMPLEMENTATIONS
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_found_in_the_maxima_pass(bad: float, use_native: bool) -> None:
    weight = torch.randn(8, 256).bfloat16()
    weight[5, 77] = bad
    for name in ("kimi-k2-thinking-int4", "fp8-block"):
        fast = fast_rtn(group_of(name), torch.bfloat16, tuple(weight.shape))
        assert fast.compress(weight, use_native=use_native) is None
    assert not kernels.all_finite(weight, use_native=use_native)
    assert kernels.all_finite(torch.randn(8, 256).bfloat16(), use_native=use_native)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.float8_e4m3fn])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_all_finite_by_min_and_max_in_every_dtype(dtype: torch.dtype, bad: float) -> None:
    """The fallback (no native kernel for the dtype) reads min and max, which carry a NaN or an Inf."""
    weight = torch.randn(8, 256)
    assert kernels.all_finite(weight.to(dtype))
    weight[3, 200] = bad
    if dtype == torch.float8_e4m3fn and bad != bad:  # e4m3fn has NaN but no Inf
        assert not kernels.all_finite(weight.to(dtype))
    elif dtype != torch.float8_e4m3fn:
        assert not kernels.all_finite(weight.to(dtype))
    assert kernels.all_finite(torch.empty(0, 4, dtype=dtype))
    assert kernels.all_finite(torch.arange(5))  # integers are finite


def test_schemes_without_fused_path_fall_back() -> None:
    for name in ("nvfp4a16", "w3a16-g32"):
        assert fast_rtn(group_of(name), torch.bfloat16, (8, 256)) is None
    assert fast_rtn(group_of("kimi-k2-thinking-int4"), torch.float32, (8, 256)) is None


def test_streamed_shard_equals_save_file(tmp_path) -> None:
    tensors = {
        "b.weight": torch.randn(6, 10).bfloat16(),
        "a.weight_packed": torch.randint(-(2**31), 2**31 - 1, (6, 2), dtype=torch.int32),
        "a.weight_shape": torch.tensor([6, 16]),
        "c.bias": torch.randn(3),
        "d.weight": torch.randn(4, 4).to(torch.float8_e4m3fn),
        "e.scalar": torch.tensor(1.5),
    }
    metadata = {"format": "pt"}
    save_file(tensors, tmp_path / "want.safetensors", metadata=metadata)
    writer = ShardWriter(
        tmp_path / "got.safetensors", [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()], metadata
    )
    for name in reversed(tensors):  # any order, in pieces
        value = tensors[name]
        if value.ndim == 2:
            writer.write(name, value[3:], 3 * value[0].numel() * value.element_size())
            writer.write(name, value[:3])
        else:
            writer.write(name, value)
    writer.close()
    assert (tmp_path / "got.safetensors").read_bytes() == (tmp_path / "want.safetensors").read_bytes()
