"""Fused RTN for the common schemes, a block of rows at a time, bit-identical to quant.rtn.

Covered: BF16 weights with symmetric int weights per group or per channel in `pack-quantized`
(1, 2, 4 or 8 bits; rows packed without padding) or `int-quantized`/`naive-quantized` (8 bits),
and FP8 (e4m3) weights in blocks in `float-quantized`. Everything else (asymmetric, tensor or
tensor-group strategies, nvfp4, 3-bit, other dtypes) returns None and goes through quant.rtn.

Per block of rows: max |x| per scale block (quant.kernels; an Inf/NaN shows up there, so the
finiteness check costs nothing), compressed-tensors' own `calculate_qparams` on (-max, max) for
the scales (what it computes from (min, max) when symmetric), then the fused quantize + pack.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from compressed_tensors.config import CompressionFormat
from compressed_tensors.quantization import QuantizationScheme, QuantizationStrategy, QuantizationType
from compressed_tensors.quantization.utils import calculate_range
from compressed_tensors.quantization.utils.helpers import _get_dtype_eps

from quant import kernels

PACKED_BITS = (1, 2, 4, 8)
INT8_FORMATS = (CompressionFormat.int_quantized.value, CompressionFormat.naive_quantized.value)


@dataclass(frozen=True)
class FastRTN:
    scheme: QuantizationScheme
    row_block: int  # rows per scale row (1, or the block height)
    col_block: int  # columns per scale (group size, block width, or all columns)
    kind: str  # "packed", "int8" or "fp8"

    def compress(self, block: torch.Tensor, use_native: bool = True) -> dict[str, torch.Tensor] | None:
        """Output pieces for rows [r, r + n) of the weight (r a multiple of row_block); None: NaN/Inf."""
        # block: [n, C] BF16
        absmax, finite = kernels.absmax_blocks(block, self.row_block, self.col_block, use_native)  # [n/rb, C/cb]
        if not finite:
            return None
        half_range, eps = _scale_constants(self.scheme)
        scale = kernels.symmetric_scales(absmax, half_range, eps, use_native)  # BF16, as quant.rtn holds it
        bits = self.scheme.weights.num_bits
        if self.kind == "fp8":
            q = kernels.quant_fp8_block(block, scale, self.row_block, self.col_block, use_native)
            return {"weight": q.view(torch.float8_e4m3fn), "weight_scale": scale}
        if self.kind == "int8":
            q = kernels.quant_int(block, scale, self.col_block, bits, 0, use_native)
            return {"weight": q.view(torch.int8), "weight_scale": scale}
        q = kernels.quant_int(block, scale, self.col_block, bits, 1 << (bits - 1), use_native)
        return {"weight_packed": q.view(torch.int32), "weight_scale": scale}

    def specs(self, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """The outputs' dtypes and shapes (meta tensors), by local name."""
        rows, cols = shape
        bits = self.scheme.weights.num_bits
        scale = torch.empty(-(-rows // self.row_block), cols // self.col_block, dtype=torch.bfloat16, device="meta")
        if self.kind == "fp8":
            return {"weight": torch.empty(shape, dtype=torch.float8_e4m3fn, device="meta"), "weight_scale": scale}
        if self.kind == "int8":
            return {"weight": torch.empty(shape, dtype=torch.int8, device="meta"), "weight_scale": scale}
        packed = torch.empty(rows, cols * bits // 32, dtype=torch.int32, device="meta")
        return {
            "weight_packed": packed,
            "weight_scale": scale,
            "weight_shape": torch.empty(2, dtype=torch.int64, device="meta"),
        }

    def constants(self, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """Outputs that depend on the shape only."""
        return {"weight_shape": torch.tensor(shape)} if self.kind == "packed" else {}


def _scale_constants(scheme: QuantizationScheme) -> tuple[torch.Tensor, float]:
    """calculate_qparams' divisor in BF16 (bit_range / 2) and its eps for a BF16 scale."""
    q_min, q_max = calculate_range(scheme.weights, "cpu")
    half_range = (q_max - q_min).to(torch.bfloat16) / 2
    return half_range, _get_dtype_eps(torch.bfloat16)


def fast_rtn(scheme: QuantizationScheme, dtype: torch.dtype, shape: tuple[int, ...]) -> FastRTN | None:
    """The fused path for this weight, or None where only compressed-tensors' own path applies."""
    args = scheme.weights
    if dtype != torch.bfloat16 or len(shape) != 2 or not args.symmetric or args.scale_dtype is not None:
        return None
    if args.actorder is not None:
        return None
    cols = shape[1]
    if args.type == QuantizationType.INT and args.strategy in (
        QuantizationStrategy.GROUP,
        QuantizationStrategy.CHANNEL,
    ):
        col_block = args.group_size if args.strategy == QuantizationStrategy.GROUP else cols
        if not col_block or cols % col_block:
            return None
        if scheme.format == CompressionFormat.pack_quantized.value and args.num_bits in PACKED_BITS:
            if cols * args.num_bits % 32 == 0:
                return FastRTN(scheme, 1, col_block, "packed")
        if scheme.format in INT8_FORMATS and args.num_bits == 8:
            return FastRTN(scheme, 1, col_block, "int8")
        return None
    if (
        args.type == QuantizationType.FLOAT
        and args.num_bits == 8
        and args.strategy == QuantizationStrategy.BLOCK
        and scheme.format in (CompressionFormat.float_quantized.value, CompressionFormat.naive_quantized.value)
    ):
        block_rows, block_cols = args.block_structure
        if cols % block_cols == 0:
            return FastRTN(scheme, block_rows, block_cols, "fp8")
    return None
