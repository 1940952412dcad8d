"""Fused RTN kernels for BF16 weights: a small C library (quant/kernels.c) with a torch fallback.

Both implementations give the same bytes as compressed-tensors' torch path (quantize, then
pack_to_int32 or the cast to float8): a division is rounded to BF16 before it is rounded to an
integer or cast to FP8, as torch does for bfloat16 tensors. tests/quant/test_kernels.py checks
the C kernels, the fallback and compressed-tensors against each other, bit for bit.

The C library is compiled once with the system C compiler (`cc`) into ~/.cache/quantgate/kernels
(or $QUANTGATE_KERNEL_CACHE), keyed by the source, the flags and the machine; where that fails
the torch fallback runs (several times slower). `QUANTGATE_KERNELS=torch` forces the fallback.

Shapes: x [R, C] BF16, (gr, gc) = rows and columns of one scale's block, S [ceil(R/gr), C/gc].
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared")
NON_FINITE_BITS = 0x7F80  # |x| bit patterns at or above this are Inf or NaN
FP8_MAX = 448.0
_LOG = logging.getLogger(__name__)
_i64, _i32, _ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "quantgate" / "kernels"
    return Path(os.environ.get("QUANTGATE_KERNEL_CACHE", default))


def _build(compiler: str) -> Path:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(FLAGS).encode() + platform.node().encode() + platform.machine().encode())
    library = _cache_dir() / f"quantgate-kernels-{key.hexdigest()[:16]}.so"
    if not library.is_file():
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
            built = Path(scratch) / library.name
            subprocess.run([compiler, *FLAGS, "-o", str(built), str(SOURCE)], check=True, capture_output=True)
            os.replace(built, library)  # atomic: concurrent builders each install a whole library
    return library


@cache
def native() -> ctypes.CDLL | None:
    """The compiled kernels, or None (no compiler, a failed build, or QUANTGATE_KERNELS=torch)."""
    if os.environ.get("QUANTGATE_KERNELS") == "torch":
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        _LOG.warning("no C compiler: quantizing with the torch fallback kernels")
        return None
    try:
        library = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.CalledProcessError) as error:
        _LOG.warning("building %s failed (%s): quantizing with the torch fallback kernels", SOURCE, error)
        return None
    library.qg_absmax_bf16.argtypes = [_ptr, _i64, _i64, _i64, _i64, _ptr]
    library.qg_absmax_bf16.restype = ctypes.c_uint16
    library.qg_scales_bf16.argtypes = [_ptr, _i64, ctypes.c_float, ctypes.c_uint16, _ptr]
    library.qg_absmax_all_bf16.argtypes = [_ptr, _i64]
    library.qg_absmax_all_bf16.restype = ctypes.c_uint16
    library.qg_quant_int_bf16.argtypes = [_ptr, _i64, _i64, _ptr, _i64, _i32, _i32, _i32, _i32, _ptr]
    library.qg_quant_fp8_block_bf16.argtypes = [_ptr, _i64, _i64, _ptr, _i64, _i64, _ptr]
    return library


def _check(x: torch.Tensor) -> None:
    assert x.dtype == torch.bfloat16 and x.is_contiguous() and x.device.type == "cpu", "BF16 contiguous CPU"


def absmax_blocks(x: torch.Tensor, gr: int, gc: int, use_native: bool = True) -> tuple[torch.Tensor, bool]:
    """(max |x| of every gr x gc block (rows padded with zeros), BF16 [ceil(R/gr), C/gc]; whether all finite)."""
    _check(x)
    rows, cols = x.shape
    lib = native() if use_native else None
    if lib is not None:
        out = torch.empty(-(-rows // gr), cols // gc, dtype=torch.bfloat16)
        top = lib.qg_absmax_bf16(x.data_ptr(), rows, cols, gr, gc, out.data_ptr())
        return out, top < NON_FINITE_BITS
    bits = x.view(torch.int16) & 0x7FFF  # |x| as ordered integers; NaN patterns sort above Inf
    pad = -rows % gr
    if pad:
        bits = torch.nn.functional.pad(bits, (0, 0, 0, pad))
    blocks = bits.view(-1, gr, cols // gc, gc).amax(dim=(1, 3))  # [R/gr, C/gc]
    return blocks.view(torch.bfloat16), bool(blocks.max() < NON_FINITE_BITS)


def symmetric_scales(
    absmax: torch.Tensor, half_range: torch.Tensor, eps: float, use_native: bool = True
) -> torch.Tensor:
    """compressed-tensors' calculate_qparams scales for symmetric args from finite BF16 maxima:
    absmax / half_range in BF16 (half_range: its BF16 `bit_range / 2`), eps where that is 0."""
    lib = native() if use_native else None
    if lib is not None:
        absmax = absmax.contiguous()
        out = torch.empty_like(absmax)
        eps_bits = torch.tensor(eps, dtype=torch.bfloat16).view(torch.uint16).item()
        lib.qg_scales_bf16(absmax.data_ptr(), absmax.numel(), float(half_range), eps_bits, out.data_ptr())
        return out
    scales = absmax / half_range
    return torch.where(scales == 0, torch.tensor(eps, dtype=scales.dtype), scales)


def all_finite(x: torch.Tensor, use_native: bool = True) -> bool:
    """No Inf or NaN in x (any dtype; BF16 by its bit patterns)."""
    if not x.is_floating_point():
        return True
    lib = native() if use_native else None
    if lib is not None and x.dtype == torch.bfloat16 and x.is_contiguous():
        return lib.qg_absmax_all_bf16(x.data_ptr(), x.numel()) < NON_FINITE_BITS
    if x.numel() == 0:
        return True
    if x.element_size() == 1:  # float8: no min/max kernels
        x = x.float()
    # min and max propagate NaN and show an Inf: one pass without a boolean copy (15-20x faster
    # than isfinite(x).all() on CPU)
    low, high = torch.aminmax(x)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def quant_int(
    x: torch.Tensor, scale: torch.Tensor, gc: int, bits: int, offset: int, use_native: bool = True
) -> torch.Tensor:
    """Symmetric int RTN of groups of gc columns, `bits` per element (1, 2, 4, 8), packed little-endian.

    q = clamp(round(bf16(x / scale)), -2^(bits-1), 2^(bits-1) - 1) + offset; uint8 [R, C * bits / 8].
    offset 2^(bits-1) is compressed-tensors' pack_to_int32 layout (view the result as int32); with
    bits 8 and offset 0 the bytes are plain int8.
    """
    _check(x)
    rows, cols = x.shape
    assert bits in (1, 2, 4, 8) and cols % gc == 0 and scale.shape == (rows, cols // gc)
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    lib = native() if use_native else None
    scale = scale.contiguous()
    if lib is not None:
        out = torch.empty(rows, cols * bits // 8, dtype=torch.uint8)
        lib.qg_quant_int_bf16(x.data_ptr(), rows, cols, scale.data_ptr(), gc, qmin, qmax, offset, bits, out.data_ptr())
        return out
    scaled = x.view(rows, cols // gc, gc) / scale.unsqueeze(-1)  # [R, C/gc, gc] BF16, as compressed-tensors
    q = (scaled.round().clamp(qmin, qmax).to(torch.int16) + offset).to(torch.uint8).view(rows, cols)
    per_byte = 8 // bits
    lanes = q.view(rows, cols // per_byte, per_byte)  # [R, C*bits/8, 8/bits]
    packed = torch.zeros(rows, cols // per_byte, dtype=torch.uint8)
    for k in range(per_byte):
        packed |= (lanes[..., k] & ((1 << bits) - 1)) << (k * bits)
    return packed


def quant_fp8_block(x: torch.Tensor, scale: torch.Tensor, br: int, bc: int, use_native: bool = True) -> torch.Tensor:
    """FP8 e4m3fn RTN of br x bc blocks: fp8(clamp(bf16(x / scale), -448, 448)), as uint8 [R, C]."""
    _check(x)
    rows, cols = x.shape
    assert cols % bc == 0 and scale.shape == (-(-rows // br), cols // bc)
    lib = native() if use_native else None
    scale = scale.contiguous()
    if lib is not None:
        out = torch.empty(rows, cols, dtype=torch.uint8)
        lib.qg_quant_fp8_block_bf16(x.data_ptr(), rows, cols, scale.data_ptr(), br, bc, out.data_ptr())
        return out
    per_row = scale.repeat_interleave(br, dim=0)[:rows]  # [R, C/bc]
    scaled = x.view(rows, cols // bc, bc) / per_row.unsqueeze(-1)  # [R, C/bc, bc] BF16
    return scaled.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).view(torch.uint8).view(rows, cols)
