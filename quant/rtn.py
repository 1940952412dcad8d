"""Round-to-nearest (data-free) quantization of one weight tensor with compressed-tensors.

Scales come from the weight's own min/max (what llm-compressor's memoryless min-max observer
sees), turned into qparams by compressed-tensors' `calculate_qparams` (and `generate_gparam`
for tensor-group fp4), then packed by compressed-tensors' registered compressor for the format.

Zero-group convention: min/max and scales are computed in the checkpoint's dtype (bf16), as
llm-compressor does, so an all-zero group gets scale = bf16 epsilon (2**-7 = 0.0078125);
compressed-tensors on a float32 copy would give float32 epsilon (1.19e-7). Packed values are
zero either way.

Shapes: O = out_features, I = in_features, g = group size, (bo, bi) = block structure.
"""

from __future__ import annotations

import torch
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme, QuantizationStrategy
from compressed_tensors.quantization.utils import (
    calculate_qparams,
    generate_gparam,
    maybe_pad_tensor_for_block_quant,
)

Strategy = QuantizationStrategy


def observe_min_max(weight: torch.Tensor, args: QuantizationArgs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-strategy minimum and maximum of a 2-D weight, in the weight's dtype."""
    # weight: [O, I]
    if args.strategy == Strategy.TENSOR:
        return weight.amin().reshape(1), weight.amax().reshape(1)  # [1]
    if args.strategy == Strategy.CHANNEL:
        return weight.amin(dim=1, keepdim=True), weight.amax(dim=1, keepdim=True)  # [O, 1]
    if args.strategy in (Strategy.GROUP, Strategy.TENSOR_GROUP):
        grouped = weight.unflatten(-1, (-1, args.group_size))  # [O, I/g, g]
        return grouped.amin(dim=-1), grouped.amax(dim=-1)  # [O, I/g]
    if args.strategy == Strategy.BLOCK:
        bo, bi = args.block_structure
        padded = maybe_pad_tensor_for_block_quant(weight, (bo, bi))  # [ceil(O/bo)*bo, ceil(I/bi)*bi], zeros
        blocks = padded.unflatten(0, (-1, bo)).unflatten(-1, (-1, bi))  # [O/bo, bo, I/bi, bi]
        return blocks.amin(dim=(1, 3)), blocks.amax(dim=(1, 3))  # [O/bo, I/bi]
    raise ValueError(f"weight strategy {args.strategy} has no data-free (RTN) observer")


def weight_qparams(weight: torch.Tensor, args: QuantizationArgs) -> dict[str, torch.Tensor]:
    """weight_scale (+ weight_zero_point, weight_global_scale) as llm-compressor holds them pre-packing."""
    min_vals, max_vals = observe_min_max(weight, args)
    qparams: dict[str, torch.Tensor] = {}
    global_scale = None
    if args.strategy == Strategy.TENSOR_GROUP:
        global_scale = generate_gparam(weight.amin(), weight.amax())  # [1] float32
        qparams["weight_global_scale"] = global_scale
    scale, zero_point = calculate_qparams(min_vals, max_vals, args, global_scale=global_scale)
    qparams["weight_scale"] = scale.to(weight.dtype)  # scales live in the observed dtype until packing
    if not args.symmetric:
        qparams["weight_zero_point"] = zero_point.to(args.zp_dtype)
    return qparams


def compress_weight(weight: torch.Tensor, scheme: QuantizationScheme) -> dict[str, torch.Tensor]:
    """The compressed tensors of one Linear weight, by local name (weight_packed, weight_scale, ...)."""
    compressor = BaseCompressor.get_value_from_registry(scheme.format)
    state = {"weight": weight, **weight_qparams(weight, scheme.weights)}
    return {name: tensor.contiguous() for name, tensor in compressor.compress(state, scheme).items()}
