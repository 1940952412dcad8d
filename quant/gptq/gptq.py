"""The GPTQ algorithm for one Linear weight (Frantar et al. 2022), after IST-DASLab's `gptq.py`.

`add_batch` accumulates the layer-input Hessian H = 2/n X^T X; `quantize` walks the columns in
blocks, quantizes each column with the scheme's fixed qparams (computed beforehand from the
weight, as llm-compressor does) and spreads the rounding error over the columns not yet
quantized through the inverse Hessian's Cholesky factor.

Activation ordering (compressed-tensors `actorder`): `None` keeps the column order; `static`
(= `weight`) visits columns by decreasing Hessian diagonal while each column keeps its original
group's scale, so no `g_idx` is stored. `group`/`dynamic` (regrouped columns, needs `g_idx`) is
not implemented.

Shapes: O = out_features, I = in_features (columns), n = calibration rows, B = block size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from compressed_tensors.quantization import QuantizationArgs, QuantizationStrategy
from compressed_tensors.quantization.utils import calculate_range

DAMP_RETRIES = 3  # after the first try, dampening x10 each retry


@dataclass(frozen=True)
class GPTQResult:
    weight: torch.Tensor  # [O, I] float32, dequantized GPTQ weight (exactly scale * q)
    loss: float  # sum over the weight of (w - q)^2 / d^2 / 2, GPTQ's own error measure
    dampening: float  # the dampening fraction that worked


class HessianFailure(RuntimeError):
    """Non-finite Hessian or a Cholesky that failed at every dampening tried."""


class GPTQ:
    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.xtx = torch.zeros(columns, columns, dtype=torch.float64)  # [I, I] sum of x^T x
        self.rows = 0

    def add_batch(self, inputs: torch.Tensor, row_weights: torch.Tensor | None = None) -> None:
        x = inputs.reshape(-1, self.columns).to(torch.float64)  # [n, I]
        if row_weights is not None:  # H = 2/n sum_i w_i^2 x_i x_i^T
            x = x * row_weights.reshape(-1, 1).to(torch.float64)
        self.xtx += x.T @ x
        self.rows += x.shape[0]

    def hessian(self) -> torch.Tensor:
        return (2.0 / max(self.rows, 1) * self.xtx).to(torch.float32)  # [I, I]

    def quantize(
        self,
        weight: torch.Tensor,
        qparams: dict[str, torch.Tensor],
        args: QuantizationArgs,
        block_size: int,
        dampening: float,
        actorder: bool,
    ) -> GPTQResult:
        hessian = self.hessian()
        if not bool(torch.isfinite(hessian).all()):
            raise HessianFailure("non-finite Hessian")
        damp = dampening
        for _ in range(DAMP_RETRIES + 1):
            try:
                return _gptq(weight, hessian, qparams, args, block_size, damp, actorder)
            except HessianFailure:
                damp *= 10
        raise HessianFailure(f"Cholesky failed up to dampening {damp / 10:g}")


class ColumnQuantizer:
    """Quantize-dequantize one column [O] with per-row scale/zero point, as compressed-tensors' int path does.

    x / scale (+ zero point), clamp to the type's range, round half to even, minus zero point, times
    scale: the same operations as `fake_quantize` without its per-call overhead (tested equal).
    """

    def __init__(self, args: QuantizationArgs) -> None:
        q_min, q_max = calculate_range(args, torch.device("cpu"))
        self.q_min, self.q_max = float(q_min), float(q_max)

    def __call__(self, column: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        # column, scale, zero: [O]
        q = torch.round(torch.clamp(column / scale + zero, self.q_min, self.q_max))
        return (q - zero) * scale


def _inverse_cholesky(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 after adding damp * mean(diag H) to the diagonal."""
    h = hessian.clone()  # [I, I]
    h.diagonal().add_(damp * torch.mean(torch.diag(h)))
    factor, info = torch.linalg.cholesky_ex(h)
    if info.item() != 0:
        raise HessianFailure("Cholesky of H failed")
    inverse = torch.cholesky_inverse(factor)
    upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
    if info.item() != 0 or not bool(torch.isfinite(upper).all()):
        raise HessianFailure("Cholesky of H^-1 failed")
    return upper  # [I, I]


def _gptq(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    qparams: dict[str, torch.Tensor],
    args: QuantizationArgs,
    block_size: int,
    damp: float,
    actorder: bool,
) -> GPTQResult:
    w = weight.to(torch.float32).clone()  # [O, I]
    columns = w.shape[1]
    h = hessian.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    perm = torch.argsort(torch.diag(h), descending=True, stable=True) if actorder else torch.arange(columns)
    w, h = w[:, perm], h[perm][:, perm]
    hinv = _inverse_cholesky(h, damp)  # [I, I]

    scale = qparams["weight_scale"].to(torch.float32)  # [O, G] or [O, 1]
    zero = qparams.get("weight_zero_point")
    zero = torch.zeros_like(scale) if zero is None else zero.to(torch.float32)  # [O, G] or [O, 1]
    group = args.group_size if args.strategy == QuantizationStrategy.GROUP else None
    quantize_column = ColumnQuantizer(args)
    quantized = torch.zeros_like(w)  # [O, I]
    losses = torch.zeros_like(w)
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        w1 = w[:, start:stop].clone()  # [O, B]
        errors = torch.zeros_like(w1)
        hinv1 = hinv[start:stop, start:stop]  # [B, B]
        for i in range(stop - start):
            column = int(perm[start + i])  # original column index, for its group's scale
            g = column // group if group else 0
            d = hinv1[i, i]
            q = quantize_column(w1[:, i], scale[:, g], zero[:, g])  # [O]
            quantized[:, start + i] = q
            losses[:, start + i] = (w1[:, i] - q) ** 2 / d**2 / 2
            err = (w1[:, i] - q) / d  # [O]
            w1[:, i:] -= err[:, None] @ hinv1[i, i:][None, :]
            errors[:, i] = err
        w[:, stop:] -= errors @ hinv[start:stop, stop:]
    inverse_perm = torch.argsort(perm)
    return GPTQResult(weight=quantized[:, inverse_perm], loss=float(losses.sum()), dampening=damp)
