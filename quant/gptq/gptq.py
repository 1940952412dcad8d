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

from quant.kernels import all_finite

DAMP_RETRIES = 3  # after the first try, dampening x10 each retry


SUB_BLOCK = 16  # columns updated one at a time; the rest of a block by one matrix product per sub-block


@dataclass(frozen=True)
class GPTQResult:
    weight: torch.Tensor  # [O, I] float32, dequantized GPTQ weight (exactly scale * q)
    row_losses: torch.Tensor  # [O] sum over each row of (w - q)^2 / d^2 / 2, GPTQ's own error measure
    dampening: float  # the dampening fraction that worked

    @property
    def loss(self) -> float:
        return float(self.row_losses.sum())


class HessianFailure(RuntimeError):
    """Non-finite Hessian or a Cholesky that failed at every dampening tried."""


class GPTQ:
    def __init__(self, columns: int, dtype: torch.dtype = torch.float64) -> None:
        self.columns = columns
        self.xtx = torch.zeros(columns, columns, dtype=dtype)  # [I, I] sum of x^T x
        self.rows = 0

    def add_batch(self, inputs: torch.Tensor, row_weights: torch.Tensor | None = None) -> None:
        x = inputs.reshape(-1, self.columns).to(self.xtx.dtype)  # [n, I]
        if row_weights is not None:  # H = 2/n sum_i w_i^2 x_i x_i^T
            x = x * row_weights.reshape(-1, 1).to(self.xtx.dtype)
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
        if not all_finite(hessian):
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
    scale: the same operations as `fake_quantize` without its per-call overhead (tested equal). A
    symmetric scheme has no zero point (None): adding and subtracting 0 is skipped.
    """

    def __init__(self, args: QuantizationArgs) -> None:
        q_min, q_max = calculate_range(args, torch.device("cpu"))
        self.q_min, self.q_max = float(q_min), float(q_max)

    def into(self, column: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, out: torch.Tensor) -> None:
        # column, scale, zero, out: [O]; out may not be column
        torch.div(column, scale, out=out)
        if zero is not None:
            out.add_(zero)
        out.clamp_(self.q_min, self.q_max).round_()
        if zero is not None:
            out.sub_(zero)
        out.mul_(scale)


def _inverse_cholesky(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor U of H^-1 (H^-1 = U^T U) after adding damp * mean(diag H) to the diagonal.

    With J the reversal of the order, J H J = L L^T gives H^-1 = (J L^-1 J)^T (J L^-1 J), and J L^-1 J
    is upper triangular with a positive diagonal: it is the factor. One Cholesky and one triangular
    solve, instead of a Cholesky, the inverse and a second Cholesky (the IST-DASLab / llm-compressor
    sequence; the same factor to float32 rounding, about a quarter less time).
    """
    h = hessian.flip(0, 1)  # [I, I] J H J, a copy
    h.diagonal().add_(damp * torch.mean(torch.diag(hessian)))
    lower, info = torch.linalg.cholesky_ex(h)
    if info.item() != 0:
        raise HessianFailure("Cholesky of H failed")
    upper = _inverse_lower(lower).flip(0, 1)  # J L^-1 J
    if not all_finite(upper):
        raise HessianFailure("inverse of the Cholesky factor is not finite")
    return upper  # [I, I]


INVERSE_BASE = 128  # _inverse_lower solves against the identity from this size down


def _inverse_lower(lower: torch.Tensor) -> torch.Tensor:
    """L^-1 of a lower-triangular [n, n] L, by halves: [[A, 0], [C, D]]^-1 = [[A^-1, 0], [-D^-1 C A^-1, D^-1]],
    the off-diagonal block by two triangular solves. About n^3/3 multiply-adds, as LAPACK's trtri
    (which torch does not expose), against n^3 for one solve against the identity (3x faster here)."""
    n = lower.shape[0]
    if n <= INVERSE_BASE:
        return torch.linalg.solve_triangular(lower, torch.eye(n, dtype=lower.dtype), upper=False)
    k = n // 2
    out = torch.zeros_like(lower)
    out[:k, :k] = _inverse_lower(lower[:k, :k])
    out[k:, k:] = _inverse_lower(lower[k:, k:])
    c_a = torch.linalg.solve_triangular(lower[:k, :k], lower[k:, :k], upper=False, left=False)  # C A^-1
    out[k:, :k] = torch.linalg.solve_triangular(lower[k:, k:], c_a, upper=False).neg_()  # -D^-1 C A^-1
    return out


def _gptq(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    qparams: dict[str, torch.Tensor],
    args: QuantizationArgs,
    block_size: int,
    damp: float,
    actorder: bool,
) -> GPTQResult:
    """GPTQ on the transposed weight: a column of W is a contiguous row of W^T [I, O] here.

    Inside a block the columns are quantized one at a time, but each column's error is spread
    one by one only over the rest of its sub-block (SUB_BLOCK columns); the rest of the block
    takes a sub-block's errors in one matrix product, and the columns after the block take the
    block's, as in the paper's lazy batch updates. Rows are independent, so several weights
    that share a Hessian are quantized as one stacked weight. The per-column steps write in place
    (rank-1 `addr_`, `addmm_` with alpha -1): one dispatch each and no temporaries.
    """
    columns = weight.shape[1]
    h = hessian.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    perm = torch.argsort(torch.diag(h), descending=True, stable=True) if actorder else torch.arange(columns)
    wt = weight.to(torch.float32).T[perm].contiguous()  # [I, O], permuted columns of W
    wt[dead[perm]] = 0
    h = h[perm][:, perm]
    hinv = _inverse_cholesky(h, damp)  # [I, I]
    diagonal = torch.diag(hinv).tolist()  # [I] as floats: no 0-d tensor per column

    scale = qparams["weight_scale"].to(torch.float32).T.contiguous()  # [G, O] or [1, O]
    zero = qparams.get("weight_zero_point")
    zero = None if zero is None else zero.to(torch.float32).T.contiguous()  # [G, O] or [1, O]
    group = args.group_size if args.strategy == QuantizationStrategy.GROUP else None
    groups = (perm // group).tolist() if group else [0] * columns  # each visited column's group
    scales = list(scale.unbind(0))  # G views [O]
    zeros = [None] * len(scales) if zero is None else list(zero.unbind(0))
    quantize_column = ColumnQuantizer(args)
    quantized = torch.empty_like(wt)  # [I, O]
    row_losses = torch.zeros(wt.shape[1])  # [O]
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        w1 = wt[start:stop].clone()  # [B, O]
        errors = torch.empty_like(w1)  # [B, O]
        hinv1 = hinv[start:stop, start:stop]  # [B, B]
        width = stop - start
        rows, q_rows, error_rows = w1.unbind(0), quantized[start:stop].unbind(0), errors.unbind(0)  # [O] views
        hinv_rows = hinv1.unbind(0)  # [B] views
        for sub in range(0, width, SUB_BLOCK):
            sub_stop = min(sub + SUB_BLOCK, width)
            for i in range(sub, sub_stop):
                g = groups[start + i]
                column, q, err = rows[i], q_rows[i], error_rows[i]
                quantize_column.into(column, scales[g], zeros[g], q)
                torch.sub(column, q, out=err).div_(diagonal[start + i])
                if i + 1 < sub_stop:
                    w1[i + 1 : sub_stop].addr_(hinv_rows[i][i + 1 : sub_stop], err, alpha=-1)
            if sub_stop < width:
                w1[sub_stop:].addmm_(hinv1[sub:sub_stop, sub_stop:].T, errors[sub:sub_stop], alpha=-1)
        row_losses += errors.square().sum(0) / 2
        if stop < columns:
            wt[stop:].addmm_(hinv[start:stop, stop:].T, errors, alpha=-1)
    inverse_perm = torch.argsort(perm)
    return GPTQResult(weight=quantized[inverse_perm].T.contiguous(), row_losses=row_losses, dampening=damp)
