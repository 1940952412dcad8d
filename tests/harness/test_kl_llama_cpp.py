"""KL complete: the full-vocabulary KL of the perplexity suite against a direct computation on the two
models' logits, and llama.cpp mode against llama-perplexity's formulas (tools/perplexity/perplexity.cpp,
transcribed below: token selection, accumulators, mean_and_uncertainty, covariance, percentile)."""

from __future__ import annotations

import math

import pytest
import torch

from harness import kl
from harness.suites.loader import load_suite
from harness.suites.perplexity import KIND, LLAMA_CPP_SEPARATOR, llama_cpp_windows, read_documents


# -- llama-perplexity, transcribed -------------------------------------------------------------------
def llama_cpp_scored(tokens: list[int], bos: int, n_ctx: int) -> list[tuple[list[int], int]]:
    """For each scored token: (the tokens the model saw before it, the token), as `perplexity` selects them."""
    out = []
    first = n_ctx // 2
    for i in range(len(tokens) // n_ctx):
        start = i * n_ctx
        batch = tokens[start : start + n_ctx]
        batch[0] = bos  # "add BOS token for the first batch of each chunk"
        for j in range(first, n_ctx - 1):  # logits of position j predict tokens[start + j + 1]
            out.append((batch[: j + 1], tokens[start + j + 1]))
    return out


def mean_and_uncertainty(total: float, total2: float, count: int) -> tuple[float, float]:
    f = total / count
    df = total2 / count - f * f
    return f, math.sqrt(df / (count - 1)) if df > 0 and count > 10 else 0.0


def covariance(suma: float, sumb: float, sumab: float, count: int) -> float:
    return (sumab / count - (suma / count) * (sumb / count)) / (count - 1) if count >= 10 else 0.0


def percentile(values: list[float], fraction: float) -> float:
    values = sorted(values)
    if fraction <= 0:
        return values[0]
    if fraction >= 1:
        return values[-1]
    p = fraction * (len(values) - 1)
    ip = int(p)
    p -= ip
    return (1 - p) * values[ip] + p * values[min(ip + 1, len(values) - 1)]


def llama_cpp_statistics(nll: list[float], nll_base: list[float], kld: list[float], p_diff: list[float]) -> dict:
    n = len(nll)
    lp = mean_and_uncertainty(sum(nll), sum(x * x for x in nll), n)
    lb = mean_and_uncertainty(sum(nll_base), sum(x * x for x in nll_base), n)
    cov = covariance(sum(nll), sum(nll_base), sum(a * b for a, b in zip(nll, nll_base, strict=True)), n)
    ppl, ppl_base = math.exp(lp[0]), math.exp(lb[0])
    ratio_unc = math.sqrt(lp[1] ** 2 + lb[1] ** 2 - 2 * cov)
    mse = mean_and_uncertainty(sum(d * d for d in p_diff), sum(d**4 for d in p_diff), n)
    return {
        "ppl": (ppl, ppl * lp[1]),
        "ppl_base": (ppl_base, ppl_base * lb[1]),
        "cor": cov / (lp[1] * lb[1]),
        "ln_ratio": (lp[0] - lb[0], ratio_unc),
        "ratio": (math.exp(lp[0] - lb[0]), math.exp(lp[0] - lb[0]) * ratio_unc),
        "difference": (
            ppl - ppl_base,
            math.sqrt((ppl * lp[1]) ** 2 + (ppl_base * lb[1]) ** 2 - 2 * ppl * ppl_base * cov),
        ),
        "kld": mean_and_uncertainty(sum(kld), sum(x * x for x in kld), n),
        "kld_percentiles": {f: percentile(kld, f / 100) for f in (0.1, 1, 5, 10, 50, 90, 95, 99, 99.9)},
        "p_diff_percentiles": {f: percentile(p_diff, f / 100) for f in (0.1, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9)},
        "rms_dp": (math.sqrt(mse[0]), 0.5 / math.sqrt(mse[0]) * mse[1]),
    }


# -- tests -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_ctx", [8, 9, 64])
def test_llama_cpp_token_selection(n_ctx):
    tokens = [1] + list(range(100, 100 + 3 * n_ctx + 5))  # BOS then text: 3 whole chunks and a rest
    windows = llama_cpp_windows(tokens, bos=1, n_ctx=n_ctx)
    ours = [
        (w.tokens[: len(w.tokens) - w.scored + k], w.tokens[len(w.tokens) - w.scored + k])
        for w in windows
        for k in range(w.scored)
    ]
    assert ours == llama_cpp_scored(tokens, 1, n_ctx)
    assert len(ours) == 3 * (n_ctx - 1 - n_ctx // 2)


def test_statistics_equal_llama_cpps_formulas():
    generator = torch.Generator().manual_seed(0)
    base = torch.log_softmax(2 * torch.randn(400, 50, generator=generator, dtype=torch.float64), -1)  # [N, V]
    variant = torch.log_softmax(base + 0.3 * torch.randn(400, 50, generator=generator, dtype=torch.float64), -1)
    targets = torch.randint(0, 50, (400,), generator=generator)
    nll, nll_base = -variant.gather(-1, targets[:, None])[:, 0], -base.gather(-1, targets[:, None])[:, 0]
    kld = kl.kl_per_token(base, variant, tail=False)
    p_diff = (-nll).exp() - (-nll_base).exp()
    expected = llama_cpp_statistics(nll.tolist(), nll_base.tolist(), kld.tolist(), p_diff.tolist())
    ours = kl.perplexity_statistics(nll, nll_base)
    print("\nllama.cpp formulas:", {k: v for k, v in expected.items() if "percentiles" not in k})
    print("harness.kl:        ", ours, "KLD", kl.mean_stderr(kld), "RMS dp", kl.rms(p_diff))
    for name, key in [
        ("ppl", "ppl"),
        ("ppl_base", "ppl_base"),
        ("ln_ppl_ratio", "ln_ratio"),
        ("ppl_ratio", "ratio"),
        ("ppl_difference", "difference"),
    ]:
        assert ours[name] == pytest.approx(expected[key], rel=1e-9)
    assert ours["ln_ppl_correlation"][0] == pytest.approx(expected["cor"], rel=1e-9)
    assert kl.mean_stderr(kld) == pytest.approx(expected["kld"], rel=1e-9)
    assert kl.rms(p_diff) == pytest.approx(expected["rms_dp"], rel=1e-9)
    ours_kld = kl.percentiles(kld, kl.KL_PERCENTILES)
    assert [ours_kld["median" if f == 50 else f"p{f:g}"] for f in expected["kld_percentiles"]] == pytest.approx(
        list(expected["kld_percentiles"].values()), rel=1e-9
    )
    assert (ours_kld["min"], ours_kld["max"]) == (min(kld.tolist()), max(kld.tolist()))
    ours_dp = kl.percentiles(p_diff, kl.DELTA_P_PERCENTILES)
    assert [ours_dp["median" if f == 50 else f"p{f:g}"] for f in expected["p_diff_percentiles"]] == pytest.approx(
        list(expected["p_diff_percentiles"].values()), rel=1e-9
    )


def test_full_vocabulary_kl_equals_a_direct_computation(backend, perplexity_suite, tmp_path):
    """The suite's kl_mean (full vocabulary, llama.cpp scoring) against log_softmax of both models' logits."""
    config = load_suite(
        perplexity_suite(top_k=None, max_documents=24, context_length=32, stride=32, scoring="llama.cpp")
    )
    bf16, int4 = backend("bf16"), backend("kimi-k2-thinking-int4")
    baseline = KIND.measure(config, bf16, tmp_path / "base")
    variant = KIND.measure_against(config, int4, tmp_path / "int4", baseline)
    metrics = {m.name: m for m in KIND.compare(config, variant, baseline)}
    assert baseline.extra["kept_distribution"] == "full vocabulary (2048 tokens): exact KL"
    text = LLAMA_CPP_SEPARATOR.join(d["text"] for d in read_documents(config))
    tokens = bf16.tokenize(text, add_bos=True)
    direct = []
    for window in llama_cpp_windows(tokens, bf16.tokenize("", add_bos=True)[0], 32):
        ids = torch.tensor([window.tokens])
        with torch.no_grad():
            p = torch.log_softmax(bf16.model(input_ids=ids).logits.double(), -1)[0, -window.scored - 1 : -1]
            q = torch.log_softmax(int4.model(input_ids=ids).logits.double(), -1)[0, -window.scored - 1 : -1]
        direct.append((p.exp() * (p - q)).sum(-1))  # [S]
    direct_kl = torch.cat(direct)
    print(
        f"\nfull-vocabulary KL: suite {metrics['kl_mean'].value:.9f}, direct {direct_kl.mean().item():.9f} "
        f"over {direct_kl.numel()} tokens"
    )
    assert metrics["kl_mean"].n == direct_kl.numel() == len(tokens) // 32 * 15
    assert metrics["kl_mean"].value == pytest.approx(direct_kl.mean().item(), rel=1e-4)
    assert metrics["kl_max"].value == pytest.approx(direct_kl.max().item(), rel=1e-4)
