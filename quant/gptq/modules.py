"""Quantize one Linear of the current layer: GPTQ, or the documented RTN fallback.

Modules that read the same input tensor share one Hessian and are quantized as one stacked
weight (`quantize_group`). Fallbacks (counted and reported, never an error): a routed expert that received fewer than
`min_expert_tokens` calibration tokens, and a module whose Hessian is non-finite or whose Cholesky
fails even after dampening x10, x100, x1000. Both take round-to-nearest with the same qparams,
which gives exactly the bytes `quantgate quantize` (RTN) writes for that module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize

from quant.gptq.gptq import GPTQ, HessianFailure
from quant.gptq.observer import choose_qparams
from quantgate.core.gptq import FEW_TOKENS, HESSIAN, GPTQOptions


@dataclass(frozen=True)
class ModuleResult:
    dequantized: torch.Tensor  # [O, I] float32, exactly scale * q (what the packed ints decode to)
    qparams: dict[str, torch.Tensor]  # weight_scale (+ weight_zero_point), in the source dtype
    loss: float  # GPTQ's error; 0 for a fallback
    fallback: str | None  # reason, or None when GPTQ quantized it
    dampening: float


def _rtn(weight: torch.Tensor, qparams: dict[str, torch.Tensor], args: QuantizationArgs) -> torch.Tensor:
    """Round-to-nearest in the source dtype, as the RTN compressor does, decoded exactly: [O, I] float32."""
    zero = qparams.get("weight_zero_point")
    ints = quantize(weight, qparams["weight_scale"], zero, args, dtype=torch.int8)  # [O, I]
    return dequantize(ints.float(), qparams["weight_scale"].float(), zero, args, dtype=torch.float32)


def quantize_module(
    weight: torch.Tensor,
    gptq: GPTQ | None,
    args: QuantizationArgs,
    options: GPTQOptions,
    expert_tokens: int | None,
) -> ModuleResult:
    """weight: [O, I] in the source dtype; gptq holds the module's calibration statistics."""
    return quantize_group({"": weight}, gptq, args, options, expert_tokens)[""]


def quantize_group(
    weights: dict[str, torch.Tensor],
    gptq: GPTQ | None,
    args: QuantizationArgs,
    options: GPTQOptions,
    expert_tokens: int | None,
) -> dict[str, ModuleResult]:
    """Modules that read the same input (an expert's gate_proj and up_proj): one Hessian, one
    factorization, their rows stacked into one GPTQ run. weights: name -> [O_m, I] in the source dtype."""
    qparams = {name: choose_qparams(weight, args, options.observer) for name, weight in weights.items()}
    reason = None
    if expert_tokens is not None and expert_tokens < options.min_expert_tokens:
        reason = FEW_TOKENS
    elif gptq is None or gptq.rows == 0:
        reason = FEW_TOKENS
    else:
        stacked = torch.cat([w.float() for w in weights.values()])  # [sum O_m, I]
        stacked_qparams = {key: torch.cat([q[key] for q in qparams.values()]) for key in next(iter(qparams.values()))}
        try:
            result = gptq.quantize(
                stacked, stacked_qparams, args, options.block_size, options.dampening, options.actorder == "static"
            )
        except HessianFailure:
            reason = HESSIAN
        else:
            out, row = {}, 0
            for name, weight in weights.items():
                rows = slice(row, row + weight.shape[0])
                loss = float(result.row_losses[rows].sum())
                out[name] = ModuleResult(result.weight[rows].clone(), qparams[name], loss, None, result.dampening)
                row = rows.stop
            return out
    return {
        name: ModuleResult(_rtn(weight, qparams[name], args), qparams[name], 0.0, reason, options.dampening)
        for name, weight in weights.items()
    }


def compress(result: ModuleResult, scheme: QuantizationScheme) -> dict[str, torch.Tensor]:
    """The module's compressed tensors (weight_packed, weight_scale, ...) by compressed-tensors' compressor.

    The compressor rounds dequantized / scale, which is exactly the integer GPTQ chose.
    """
    compressor = BaseCompressor.get_value_from_registry(scheme.format)
    state = {"weight": result.dequantized, **result.qparams}
    return {name: tensor.contiguous() for name, tensor in compressor.compress(state, scheme).items()}
