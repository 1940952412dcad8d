"""The maths of comparing a variant's next-token distributions and expert routing with the baseline's.

Legend: N = scored tokens, K = kept log-probabilities per token (top-k of the baseline, or the
whole vocabulary), k = experts selected per token, E = routed experts.

Top-k KL (llama.cpp `perplexity --kl-divergence` style, with the tail kept): both distributions are
reduced to the baseline's K most likely tokens plus one bucket holding the rest of the mass, and
KL(P_base || Q_variant) is taken over those K + 1 outcomes. With the full vocabulary the tail
bucket is empty and this is the exact KL. Reducing to buckets never increases KL (data
processing inequality), so top-k KL is a lower bound of the full one.
"""

from __future__ import annotations

import math

import torch

# llama.cpp's `perplexity --kl-divergence` statistics: these percentiles of KL and of delta p, plus max and min
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
KL_PERCENTILES = (0.1, 1.0, 5.0, 10.0, 50.0, 90.0, 95.0, 99.0, 99.9)
DELTA_P_PERCENTILES = (0.1, 1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9)
TAIL_FLOOR = 1e-30  # a tail bucket below this is treated as empty (0 log 0 = 0)


def mean_stderr(x: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n)); tokens are treated as independent."""
    x = x.double()
    n = x.numel()
    stderr = x.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return x.mean().item(), stderr


def percentiles(x: torch.Tensor, points: tuple[float, ...] = PERCENTILES) -> dict[str, float]:
    """The given percentiles (linear interpolation between order statistics at fraction * (n - 1), as
    numpy's default and llama.cpp's `percentile`), named `median` and `p<P>`, then max and min."""
    x = x.double()
    q = torch.tensor([p / 100 for p in points], dtype=torch.float64)
    values = torch.quantile(x, q).tolist()
    names = ["median" if p == 50.0 else f"p{p:g}" for p in points]
    return {**dict(zip(names, values, strict=True)), "max": x.max().item(), "min": x.min().item()}


def rms(x: torch.Tensor) -> tuple[float, float]:
    """Root mean square and its uncertainty as llama.cpp gives it for delta p: 0.5 / rms * stderr(mean x^2)."""
    mean_square, stderr = mean_stderr(x.double() ** 2)
    value = math.sqrt(mean_square)
    return value, 0.5 / value * stderr if value > 0 else 0.0


def perplexity_statistics(nll: torch.Tensor, base_nll: torch.Tensor) -> dict[str, tuple[float, float]]:
    """llama.cpp's "Perplexity statistics" of a variant (nll [N]) against the baseline (base_nll [N]) on
    the same tokens, each (value, uncertainty): PPL(Q), PPL(base), Cor(ln PPL(Q), ln PPL(base)) (no
    uncertainty: 0), ln(PPL(Q)/PPL(base)), PPL(Q)/PPL(base), PPL(Q) - PPL(base). The covariance of the two
    mean NLLs, (mean(a b) - mean(a) mean(b)) / (N - 1), enters the ratio's and the difference's uncertainty."""
    a, b = nll.double(), base_nll.double()
    n = a.numel()
    mean_q, se_q = mean_stderr(a)
    mean_b, se_b = mean_stderr(b)
    cov = ((a * b).mean().item() - mean_q * mean_b) / (n - 1)
    ppl_q, ppl_b = math.exp(mean_q), math.exp(mean_b)
    ln_ratio, ln_ratio_unc = mean_q - mean_b, math.sqrt(max(se_q**2 + se_b**2 - 2 * cov, 0.0))
    ratio = math.exp(ln_ratio)
    difference_unc = math.sqrt(max((ppl_q * se_q) ** 2 + (ppl_b * se_b) ** 2 - 2 * ppl_q * ppl_b * cov, 0.0))
    return {
        "ppl": (ppl_q, ppl_q * se_q),
        "ppl_base": (ppl_b, ppl_b * se_b),
        "ln_ppl_correlation": (cov / (se_q * se_b) if se_q > 0 and se_b > 0 else 1.0, 0.0),
        "ln_ppl_ratio": (ln_ratio, ln_ratio_unc),
        "ppl_ratio": (ratio, ratio * ln_ratio_unc),
        "ppl_difference": (ppl_q - ppl_b, difference_unc),
    }


def perplexity(nll: torch.Tensor) -> tuple[float, float]:
    """PPL = exp(mean NLL); its stderr by the delta method: PPL * stderr(mean NLL)."""
    mean, stderr = mean_stderr(nll)
    ppl = math.exp(mean)
    return ppl, ppl * stderr


def _with_tail(logprobs: torch.Tensor) -> torch.Tensor:
    """[N, K] log-probabilities -> [N, K + 1] probabilities, the last column the mass outside the K."""
    probs = logprobs.double().exp()  # [N, K]
    tail = (1.0 - probs.sum(-1, keepdim=True)).clamp_min(0.0)  # [N, 1]
    return torch.cat([probs, tail], dim=-1)


def kl_per_token(
    base_logprobs: torch.Tensor, variant_logprobs: torch.Tensor, tail: bool = True
) -> torch.Tensor:
    """KL(P_base || Q_variant) per token over the K kept tokens plus the tail bucket. [N, K] each -> [N].

    tail=False when K is the whole vocabulary: the leftover mass is float rounding, not a bucket.
    """
    if not tail:
        p = base_logprobs.double().exp()
        return (p * (base_logprobs.double() - variant_logprobs.double())).sum(-1).clamp_min(0.0)
    p = _with_tail(base_logprobs)  # [N, K+1]
    q = _with_tail(variant_logprobs)  # [N, K+1]
    log_p = torch.cat([base_logprobs.double(), p[:, -1:].clamp_min(TAIL_FLOOR).log()], dim=-1)
    log_q = torch.cat([variant_logprobs.double(), q[:, -1:].clamp_min(TAIL_FLOOR).log()], dim=-1)
    terms = torch.where(p > TAIL_FLOOR, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(-1).clamp_min(0.0)  # rounding can give -1e-17


TIE_TOLERANCE = 1e-6  # nats, absolute and relative: log-probabilities this close are tied (float32 rounding)


def same_top1(
    base_logprobs: torch.Tensor,
    base_ids: torch.Tensor | None,
    variant_logprobs: torch.Tensor,
    base_top: torch.Tensor,
    variant_top: torch.Tensor,
) -> torch.Tensor:
    """Whether the variant's top-1 token agrees with the baseline's, ties counting as agreement. [N] bool.

    base_logprobs, variant_logprobs [N, K]: both sides at the same K ids (`base_ids` [N, K], or None when
    K is the whole vocabulary); base_top, variant_top [N]: each side's own top-1 id. The two agree when the
    ids are equal, or when either side ranks the other's top-1 as high as its own within TIE_TOLERANCE
    (in bfloat16 tied logits are common, and which of them topk or argmax returns is arbitrary), judged
    on the same kept log-probabilities for both sides. An id outside the K kept is never tied.
    """
    ids = base_ids.long() if base_ids is not None else torch.arange(base_logprobs.shape[-1]).expand_as(base_logprobs)
    at_variant_top = ids == variant_top.long()[:, None]  # [N, K]
    at_base_top = ids == base_top.long()[:, None]  # [N, K]
    kept = at_variant_top.any(-1)  # the variant's top-1 is among the kept ids
    base, variant = base_logprobs.double(), variant_logprobs.double()
    lowest = torch.tensor(-torch.inf, dtype=torch.float64)

    def value_at(logprobs: torch.Tensor, where: torch.Tensor) -> torch.Tensor:  # [N]
        return torch.where(where, logprobs, lowest).max(-1).values

    def tied(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # a ranks as high as b, within the tolerance
        return a >= b - TIE_TOLERANCE * torch.maximum(torch.ones_like(b), b.abs())

    base_tie = tied(value_at(base, at_variant_top), base.max(-1).values)
    variant_tie = tied(value_at(variant, at_base_top), value_at(variant, at_variant_top))
    return (base_top.long() == variant_top.long()) | (kept & (base_tie | variant_tie))


def same_experts(base: torch.Tensor, variant: torch.Tensor) -> torch.Tensor:
    """Whether each token selected exactly the baseline's experts. [N, k] sorted ids each -> [N] bool."""
    return (base == variant).all(-1)


def expert_overlap(base: torch.Tensor, variant: torch.Tensor) -> torch.Tensor:
    """Share of the baseline's k experts that the variant also selected, per token. Out: [N]."""
    return (base[:, :, None] == variant[:, None, :]).any(-1).double().mean(-1)


def expert_load(ids: torch.Tensor, experts: int) -> torch.Tensor:
    """Share of routed slots each expert received. In: [N, k]; out: [E], sums to 1."""
    counts = torch.bincount(ids.flatten(), minlength=experts).double()
    return counts / counts.sum()


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * (p - q).abs().sum().item()


def js_divergence_bits(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint support)."""
    m = 0.5 * (p + q)

    def kl_bits(a: torch.Tensor) -> float:
        keep = a > 0
        return (a[keep] * (a[keep] / m[keep]).log2()).sum().item()

    return 0.5 * kl_bits(p) + 0.5 * kl_bits(q)
