"""The fixed qparams GPTQ quantizes against: RTN's min/max scales, or a per-group MSE search.

`minmax` is exactly what `quantgate quantize` (RTN) stores, so a module that falls back to RTN
gets RTN's bytes. `mse` shrinks each group's range by p in {1.00, 0.99, ..., 0.80} and keeps,
per group, the p whose fake-quantized weight has the smallest sum |w - q|^2.4 (llm-compressor's
MSE observer: norm 2.4, max shrink 0.2). Scales stay in the weight's dtype (bf16), as RTN's.

Shapes: O = out_features, I = in_features, G = groups per row (1 for channel).
"""

from __future__ import annotations

import torch
from compressed_tensors.quantization import QuantizationArgs, QuantizationStrategy
from compressed_tensors.quantization.lifecycle.forward import fake_quantize
from compressed_tensors.quantization.utils import calculate_qparams

from quant.rtn import observe_min_max, weight_qparams

MSE_NORM = 2.4
MSE_GRID = tuple(1.0 - i / 100 for i in range(21))


def _group_error(weight: torch.Tensor, fake: torch.Tensor, groups: int) -> torch.Tensor:
    err = (weight.float() - fake.float()).abs().pow(MSE_NORM)  # [O, I]
    return err.unflatten(-1, (groups, -1)).sum(-1)  # [O, G]


def choose_qparams(weight: torch.Tensor, args: QuantizationArgs, observer: str) -> dict[str, torch.Tensor]:
    """weight_scale (+ weight_zero_point) for a [O, I] weight in its own dtype."""
    if observer == "minmax":
        return weight_qparams(weight, args)
    min_vals, max_vals = observe_min_max(weight, args)  # [O, G]
    groups = min_vals.shape[-1]
    best: dict[str, torch.Tensor] | None = None
    best_err = None
    for shrink in MSE_GRID:
        scale, zero = calculate_qparams(min_vals * shrink, max_vals * shrink, args)
        scale = scale.to(weight.dtype)
        fake = fake_quantize(weight, scale, zero, args)  # [O, I]
        err = _group_error(weight, fake, groups)  # [O, G]
        if best is None:
            best, best_err = {"weight_scale": scale, "weight_zero_point": zero}, err
            continue
        better = err < best_err  # [O, G]
        best = {
            "weight_scale": torch.where(better, scale, best["weight_scale"]),
            "weight_zero_point": torch.where(better, zero, best["weight_zero_point"]),
        }
        best_err = torch.minimum(err, best_err)
    assert best is not None
    if args.symmetric or args.strategy not in (QuantizationStrategy.GROUP, QuantizationStrategy.CHANNEL):
        best.pop("weight_zero_point")
    else:
        best["weight_zero_point"] = best["weight_zero_point"].to(args.zp_dtype)
    return best
