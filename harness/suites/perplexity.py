"""Suite `perplexity`: sliding-window NLL over held-out text, and the variant's drift from the baseline.

Windows are lm-eval 0.4.13's `loglikelihood_rolling` windows, generalised by a stride: each
document is tokenized as the tokenizer does by default (Kimi K2's adds BOS), the BOS id is the
prefix that the first window's first token is predicted from, and every document token is scored
exactly once. With `stride == context_length` the windows are lm-eval's, token for token, so the
perplexity equals `lm_eval ... loglikelihood_rolling` (tests/harness/test_perplexity.py proves it).

Artifacts (`distributions.safetensors` in the measurement's out_dir), N = scored tokens:
  target_ids [N], target_logprobs [N], argmax_ids [N], document [N];
  kept_logprobs [N, K]: the baseline's top-K log-probabilities (K = vocab when `top_k` is null and
  [N, V] float32 fits in `max_kept_mib`; else K = `fallback_top_k`; an endpoint: its `max_top_k`),
  kept_ids [N, K] in top-k mode; routing.<layer> [N, k]: sorted selected experts per MoE layer.
A variant measured against the baseline stores `kept_logprobs` at the *baseline's* kept ids instead,
which is what top-k KL needs (KL over the baseline's top-K plus one tail bucket); against a full-vocabulary
baseline it stores the exact per-token KL (`kl` [N], float64) rather than a second [N, V] array. What the
KL was taken over is stated in summary.json (`kept_distribution`).

Scoring `llama.cpp` selects tokens as `llama-perplexity` does (tools/perplexity/perplexity.cpp): the
documents joined by a blank line into one text, tokenized with BOS, cut into len // n_ctx non-overlapping
chunks of n_ctx = context_length tokens, the first token of each chunk replaced by BOS, and only the
last n_ctx - 1 - n_ctx/2 tokens of each chunk scored; rows of samples.jsonl are then chunks. With the
full vocabulary the comparison gives llama.cpp's `--kl-divergence` statistics (harness.kl): mean KLD and
its uncertainty, its percentiles 0.1 .. 99.9 with max and min, delta p's mean, percentiles, max, min and
RMS, same top p, PPL(base), the correlation of ln p, ln(PPL(Q)/PPL(base)), PPL ratio and difference with
their uncertainties. llama.cpp stores the base log-probabilities as 16-bit integers and drops base
probabilities below e^-16 from the KL sum; here they are float32 and every token counts.

A backend that cannot return the full vocabulary (an endpoint: `max_top_k`, e.g. vLLM's --max-logprobs)
scores a variant at its own top-`max_top_k`; a baseline id outside it gets the smallest log-probability
the variant returned at that position (an upper bound on its true value, capped so that the kept mass
stays <= 1), so KL over the baseline's top-K + tail is then an estimate, exact when the variant's
top-`max_top_k` covers the baseline's top-K.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from safetensors.torch import load_file, save_file

from harness import kl
from harness.backends.base import Backend, Window, WindowScores
from harness.suites.base import Measurement, SuiteConfig, SuiteKind, register_suite
from quantgate.core.errors import InputError
from quantgate.core.metrics import Direction, Metric

ARTIFACT = "distributions.safetensors"


class PerplexityConfig(SuiteConfig):
    kind: Literal["perplexity"]
    data: Path  # JSONL with {"id", "text"} per line
    context_length: int = Field(gt=1)  # tokens a window feeds the model (lm-eval's max_length)
    stride: int = Field(gt=0)  # tokens newly scored per window after the first; == context_length: lm-eval's
    # baseline log-probabilities kept per token (+ a tail bucket); null: the full vocabulary where it fits
    # in `max_kept_mib` (N x V float32) and the backend returns it, else the top `fallback_top_k`
    top_k: int | None = Field(gt=0)
    batch_size: int = Field(gt=0)  # windows per forward pass
    max_documents: int | None = Field(default=None, gt=0)  # the first N documents only (null: all)
    # rolling: lm-eval's loglikelihood_rolling windows per document; llama.cpp: llama-perplexity's tokens
    # (the documents joined by a blank line, non-overlapping chunks of context_length, BOS first, the
    # second half of each chunk scored; needs stride == context_length)
    scoring: Literal["rolling", "llama.cpp"] = "rolling"
    max_kept_mib: int = Field(default=2048, gt=0)
    fallback_top_k: int = Field(default=64, gt=0)

    @model_validator(mode="after")
    def _stride_fits(self) -> PerplexityConfig:
        if self.stride > self.context_length:
            raise ValueError(f"stride {self.stride} exceeds context_length {self.context_length}")
        if self.scoring == "llama.cpp" and self.stride != self.context_length:
            raise ValueError("scoring llama.cpp uses non-overlapping chunks: set stride equal to context_length")
        return self


def rolling_windows(tokens: list[int], prefix: int, context_length: int, stride: int) -> list[Window]:
    """lm-eval's get_rolling_token_windows + make_disjoint_window (max_seq_len = context_length,
    context_len = context_length - stride + 1). The first window predicts tokens[0] from `prefix`."""
    if not tokens:
        return []
    first = min(context_length, len(tokens))
    windows = [Window(tokens=[prefix] + tokens[:first], scored=first)]
    predicted = first
    while predicted < len(tokens):
        scored = min(len(tokens) - predicted, stride)
        end = predicted + scored
        windows.append(Window(tokens=tokens[end - context_length - 1 : end], scored=scored))
        predicted = end
    return windows


def read_documents(config: PerplexityConfig) -> list[dict]:
    documents = []
    with config.data.open() as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                documents.append({"id": str(row["id"]), "text": str(row["text"])})
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(
                    f"{config.data}:{line_number}: not a JSON object with 'id' and 'text'"
                ) from None
    if not documents:
        raise InputError(f"{config.data}: no documents")
    return documents[: config.max_documents]


LLAMA_CPP_SEPARATOR = "\n\n"  # between documents in llama.cpp mode (llama-perplexity reads one text file)


def llama_cpp_windows(tokens: list[int], bos: int | None, n_ctx: int) -> list[Window]:
    """llama-perplexity's chunks (tools/perplexity/perplexity.cpp, `perplexity`): tokens[i n_ctx : (i+1) n_ctx]
    for i < len(tokens) // n_ctx, the first token replaced by BOS when the model adds one; the logits of
    positions n_ctx/2 .. n_ctx-2 are scored, i.e. the chunk's last n_ctx - 1 - n_ctx/2 tokens."""
    first = n_ctx // 2
    windows = []
    for start in range(0, len(tokens) // n_ctx * n_ctx, n_ctx):
        chunk = tokens[start : start + n_ctx]
        windows.append(Window(tokens=([bos] if bos is not None else chunk[:1]) + chunk[1:], scored=n_ctx - 1 - first))
    return windows


def _llama_cpp_windows(config: PerplexityConfig, backend: Backend) -> tuple[list[dict], list[Window], list[int]]:
    """One chunk per "document" (its rows are chunks), from the documents' texts joined as one text."""
    text = LLAMA_CPP_SEPARATOR.join(d["text"] for d in read_documents(config))
    tokens = backend.tokenize(text, add_bos=True)
    bos = backend.tokenize("", add_bos=True)
    if len(tokens) < 2 * config.context_length:  # llama-perplexity's own minimum
        raise InputError(
            f"{config.data}: {len(tokens)} tokens; llama.cpp scoring needs at least 2 x context_length "
            f"({2 * config.context_length})"
        )
    windows = llama_cpp_windows(tokens, bos[0] if len(bos) == 1 else None, config.context_length)
    chunks = [{"id": f"chunk-{i}", "tokens": config.context_length} for i in range(len(windows))]
    return chunks, windows, list(range(len(windows)))


def _document_windows(
    config: PerplexityConfig, backend: Backend
) -> tuple[list[dict], list[Window], list[int]]:
    """Documents, their windows in order, and the document index of each window."""
    if config.scoring == "llama.cpp":
        return _llama_cpp_windows(config, backend)
    bos = backend.tokenize("", add_bos=True)
    if len(bos) != 1:
        raise InputError(
            f"{config.data}: the tokenizer adds no BOS token to use as the rolling-window prefix"
        )
    documents, windows, owner = read_documents(config), [], []
    for index, document in enumerate(documents):
        tokens = backend.tokenize(document["text"], add_bos=True)
        document["tokens"] = len(tokens)
        for window in rolling_windows(tokens, bos[0], config.context_length, config.stride):
            windows.append(window)
            owner.append(index)
    return documents, windows, owner


def gather_partial(top_ids: torch.Tensor, top_logprobs: torch.Tensor, at_ids: torch.Tensor) -> torch.Tensor:
    """Log-probabilities at `at_ids` [S, K] from a partial top-k (top_ids, top_logprobs [S, k']); an id
    outside the top-k' gets the smallest returned value, lowered where needed so the total stays <= 1."""
    match = at_ids[:, :, None] == top_ids[:, None, :]  # [S, K, k']
    found = match.any(-1)  # [S, K]
    values = torch.where(match, top_logprobs[:, None, :].double(), torch.zeros((), dtype=torch.float64)).sum(-1)
    floor = top_logprobs.double().min(-1, keepdim=True).values  # [S, 1]
    free = (1.0 - top_logprobs.double().exp().sum(-1, keepdim=True)).clamp_min(1e-30)  # mass outside top-k'
    missing = (~found).sum(-1, keepdim=True).clamp_min(1)
    fill = torch.minimum(floor, (free / missing).log())  # [S, 1]
    return torch.where(found, values, fill).float()


def _reduce(score: WindowScores, keep: int | None, at_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """What is kept of one window's scores. keep: top-k scored (ids kept); at_ids [S, K]: gather there."""
    if keep is not None and at_ids is not None:  # a variant on a backend without the full vocabulary
        return {
            "target_logprobs": score.target_logprobs,
            "argmax_ids": score.top_ids[:, 0],
            "kept_logprobs": gather_partial(score.top_ids, score.top_logprobs, at_ids),
            **{f"routing.{layer}": experts for layer, experts in score.routing.items()},
        }
    if keep is not None:
        return {
            "target_logprobs": score.target_logprobs,
            "argmax_ids": score.top_ids[:, 0],
            "kept_logprobs": score.top_logprobs,
            "kept_ids": score.top_ids.to(torch.int32),
            **{f"routing.{layer}": experts for layer, experts in score.routing.items()},
        }
    full = score.top_logprobs  # [S, V]
    return {
        "target_logprobs": score.target_logprobs,
        "argmax_ids": full.argmax(-1),
        "kept_logprobs": full if at_ids is None else full.gather(-1, at_ids),
        **{f"routing.{layer}": experts for layer, experts in score.routing.items()},
    }


def kept_top_k(config: PerplexityConfig, backend: Backend, tokens: int) -> int | None:
    """What the baseline keeps per token: None (the full vocabulary) when the config asks for it, the
    backend returns it (an endpoint returns at most its `max_top_k`) and [tokens, V] float32 fits."""
    if config.top_k is not None:
        return config.top_k
    endpoint_k = getattr(backend, "max_top_k", None)
    if endpoint_k is not None:
        return endpoint_k
    tokenizer = getattr(backend, "tokenizer", None)
    vocabulary = len(tokenizer) if tokenizer is not None else 0
    return None if tokens * vocabulary * 4 <= config.max_kept_mib * 2**20 else config.fallback_top_k


def _collect(
    config: PerplexityConfig, backend: Backend, baseline: dict[str, torch.Tensor] | None
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Score every window, longest first in batches (as lm-eval does), keeping only what `_reduce` keeps.

    A baseline in top-k mode keeps its top-k; a variant (baseline_ids [N, K]) or a full-vocabulary run
    scores the full vocabulary and keeps it, or gathers it at the baseline's ids.
    """
    documents, windows, owner = _document_windows(config, backend)
    targets = [t for w in windows for t in w.tokens[len(w.tokens) - w.scored :]]
    if baseline is not None and targets != baseline["target_ids"].tolist():
        raise InputError(f"{config.data}: the model tokenizes the text differently from the baseline")
    baseline_ids = baseline["kept_ids"].long() if baseline is not None and "kept_ids" in baseline else None
    keep = kept_top_k(config, backend, len(targets)) if baseline is None else getattr(backend, "max_top_k", None)
    if baseline is not None and baseline_ids is None and keep is not None:
        raise InputError(f"suite {config.name}: the baseline kept the full vocabulary, and backend {backend.name} "
                         f"returns only its top-{keep}: measure both with top_k set")
    tokenizer = getattr(backend, "tokenizer", None)
    if baseline is None and keep is not None and tokenizer is not None and keep > len(tokenizer):
        raise InputError(f"suite {config.name}: top_k {keep} exceeds the model's vocabulary ({len(tokenizer)} tokens)")
    starts = torch.tensor([0] + [w.scored for w in windows]).cumsum(0).tolist()  # each window's first token
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].tokens))
    reduced: list[dict[str, torch.Tensor]] = [{}] * len(windows)
    for first in range(0, len(order), config.batch_size):
        chunk = order[first : first + config.batch_size]
        for index, score in zip(chunk, backend.score_windows([windows[i] for i in chunk], keep), strict=True):
            at_ids = None if baseline_ids is None else baseline_ids[starts[index] : starts[index + 1]]
            reduced[index] = _reduce(score, keep, at_ids)
    arrays = {name: torch.cat([r[name] for r in reduced]) for name in sorted(reduced[0])} if reduced else {}
    document = [d for w, d in zip(windows, owner, strict=True) for _ in range(w.scored)]
    arrays |= {"target_ids": torch.tensor(targets), "document": torch.tensor(document, dtype=torch.int32)}
    arrays["target_logprobs"] = arrays["target_logprobs"].float()
    arrays["kept_logprobs"] = arrays["kept_logprobs"].float()
    return documents, arrays


def _own_metrics(arrays: dict[str, torch.Tensor]) -> list[Metric]:
    nll = -arrays["target_logprobs"]
    n = nll.numel()
    ppl, ppl_stderr = kl.perplexity(nll)
    mean_nll, nll_stderr = kl.mean_stderr(nll)
    return [
        Metric("perplexity", ppl, "lower", ppl_stderr, n=n),
        Metric("nll_mean", mean_nll, "lower", nll_stderr, unit="nats/token", n=n),
        Metric("tokens_scored", float(n), "none", n=n),
    ]


def _document_rows(
    documents: list[dict], arrays: dict[str, torch.Tensor], per_token: dict[str, torch.Tensor]
) -> list[dict]:
    """Per document: tokens, NLL sum, perplexity, and the mean of each `per_token` series."""
    rows = []
    for index, document in enumerate(documents):
        mask = arrays["document"] == index
        nll = -arrays["target_logprobs"][mask].double()
        row = {
            "id": document["id"],
            "tokens": document["tokens"],
            "nll_sum": nll.sum().item(),
            "perplexity": nll.mean().exp().item(),
        }
        rows.append(row | {name: values[mask].double().mean().item() for name, values in per_token.items()})
    return rows


def _measurement(
    config: PerplexityConfig,
    documents: list[dict],
    arrays: dict[str, torch.Tensor],
    out_dir: Path,
    per_token: dict[str, torch.Tensor],
    kept: str,
) -> Measurement:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in arrays.items()}, out_dir / ARTIFACT)
    return Measurement(
        metrics=_own_metrics(arrays),
        samples=_document_rows(documents, arrays, per_token),
        out_dir=out_dir,
        extra={"kept_distribution": kept, "documents": len(documents), "moe_layers": _moe_layers(arrays),
               "scoring": config.scoring},
    )


def kept_description(config: PerplexityConfig, base: dict[str, torch.Tensor]) -> str:
    """What the KL is taken over, from the baseline's artifact: the full vocabulary, or top-K + tail (and why)."""
    if "kept_ids" not in base:
        return f"full vocabulary ({base['kept_logprobs'].shape[-1]} tokens): exact KL"
    k = base["kept_ids"].shape[-1]
    why = "" if config.top_k is not None else (
        f" (full vocabulary asked: the backend returns at most top-{k}, or [N, V] float32 exceeds "
        f"max_kept_mib {config.max_kept_mib})")
    return f"top-{k} of the baseline + tail bucket: KL is a lower bound{why}"


def _moe_layers(arrays: dict[str, torch.Tensor]) -> list[int]:
    return sorted(int(name.split(".")[1]) for name in arrays if name.startswith("routing."))


def measure(config: PerplexityConfig, backend: Backend, out_dir: Path) -> Measurement:
    documents, arrays = _collect(config, backend, None)
    return _measurement(config, documents, arrays, out_dir, per_token={}, kept=kept_description(config, arrays))


def measure_against(
    config: PerplexityConfig, backend: Backend, out_dir: Path, baseline: Measurement
) -> Measurement:
    base = load_file(baseline.out_dir / ARTIFACT)
    documents, arrays = _collect(config, backend, base)
    per_token = token_comparison(config, base, arrays)
    if "kept_ids" not in base:  # full vocabulary: keep the exact per-token KL, not a second [N, V] array
        arrays["kl"] = per_token["kl"]
        arrays["same_top1"] = per_token["same_top1"]  # tie-aware needs both sides' log-probabilities: judged now
        del arrays["kept_logprobs"]
    return _measurement(
        config,
        documents,
        arrays,
        out_dir,
        per_token={"kl_mean": per_token["kl"], "same_top1": per_token["same_top1"]},
        kept=kept_description(config, base),
    )


def token_comparison(config: PerplexityConfig, base: dict, variant: dict) -> dict[str, torch.Tensor]:
    """Per scored token [N]: KL(base || variant), same top-1, delta p of the actual next token, delta NLL."""
    return {
        "kl": variant["kl"].double() if "kl" in variant
        else kl.kl_per_token(base["kept_logprobs"], variant["kept_logprobs"], tail="kept_ids" in base),
        "same_top1": variant["same_top1"].double() if "same_top1" in variant
        else kl.same_top1(  # tie-aware, on both sides' kept log-probabilities at the same ids
            base["kept_logprobs"], base.get("kept_ids"), variant["kept_logprobs"], base["argmax_ids"],
            variant["argmax_ids"],
        ).double(),
        "delta_p": variant["target_logprobs"].double().exp() - base["target_logprobs"].double().exp(),
        "delta_nll": base["target_logprobs"].double() - variant["target_logprobs"].double(),
    }


LOWER_TAIL = ("p0.1", "p1", "p5", "p10", "p25", "min")  # of delta p: where the harm is


def _distribution_metrics(
    name: str, values: torch.Tensor, direction: Direction, percentile_direction: Direction, unit: str,
    points: tuple[float, ...], lower_tail: Direction | None = None,
) -> list[Metric]:
    """Mean with stderr, then the percentiles, max and min (`lower_tail`: the direction of the low ones)."""
    mean, stderr = kl.mean_stderr(values)
    n = values.numel()
    return [Metric(f"{name}_mean", mean, direction, stderr, unit, n)] + [
        Metric(f"{name}_{stat}", value, lower_tail if lower_tail and stat in LOWER_TAIL else percentile_direction,
               None, unit, n)
        for stat, value in kl.percentiles(values, points).items()
    ]


def compare(config: PerplexityConfig, variant: Measurement, baseline: Measurement) -> list[Metric]:
    base, var = load_file(baseline.out_dir / ARTIFACT), load_file(variant.out_dir / ARTIFACT)
    per_token = token_comparison(config, base, var)
    n = per_token["kl"].numel()
    same_top1, same_top1_stderr = kl.mean_stderr(per_token["same_top1"])
    log_ratio, log_ratio_stderr = kl.mean_stderr(per_token["delta_nll"])  # paired: same tokens
    rms, rms_unc = kl.rms(per_token["delta_p"])
    ppl = kl.perplexity_statistics(-var["target_logprobs"], -base["target_logprobs"])
    metrics = [
        *_distribution_metrics("kl", per_token["kl"], "lower", "lower", "nats/token", kl.KL_PERCENTILES),
        Metric("same_top1", 100 * same_top1, "higher", 100 * same_top1_stderr, "%", n),
        *_distribution_metrics("delta_p", per_token["delta_p"], "higher", "none", "probability",
                               kl.DELTA_P_PERCENTILES, lower_tail="higher"),
        Metric("delta_p_rms", rms, "lower", rms_unc, "probability", n),
        Metric("ln_ppl_ratio", log_ratio, "lower", log_ratio_stderr, "ln(PPL(Q)/PPL(base))", n),
        Metric("ppl_ratio", ppl["ppl_ratio"][0], "lower", ppl["ppl_ratio"][1], "PPL(Q)/PPL(base)", n),
        Metric("ppl_difference", ppl["ppl_difference"][0], "lower", ppl["ppl_difference"][1], "PPL(Q) - PPL(base)", n),
        Metric("perplexity_base", ppl["ppl_base"][0], "none", ppl["ppl_base"][1], "PPL(base) on these tokens", n),
        Metric("ln_ppl_correlation", ppl["ln_ppl_correlation"][0], "none", None,
               "Pearson correlation of per-token ln p, variant and baseline", n),
    ]
    return metrics + routing_metrics(base, var)


def routing_metrics(base: dict[str, torch.Tensor], variant: dict[str, torch.Tensor]) -> list[Metric]:
    """Per MoE layer: same expert set share, mean expert overlap, expert-load TVD and JS divergence."""
    metrics, agreements = [], []
    for layer in (layer for layer in _moe_layers(base) if f"routing.{layer}" in variant):  # none via an endpoint
        b, v = base[f"routing.{layer}"].long(), variant[f"routing.{layer}"].long()  # [N, k]
        n, experts = b.shape[0], int(max(b.max(), v.max())) + 1
        same, same_stderr = kl.mean_stderr(kl.same_experts(b, v).double())
        overlap, overlap_stderr = kl.mean_stderr(kl.expert_overlap(b, v))
        load_b, load_v = kl.expert_load(b, experts), kl.expert_load(v, experts)
        agreements.append(same)
        metrics += [
            Metric(f"routing_same_experts.layer_{layer}", same, "higher", same_stderr, "share", n),
            Metric(f"routing_expert_overlap.layer_{layer}", overlap, "higher", overlap_stderr, "share", n),
            Metric(
                f"routing_load_tvd.layer_{layer}", kl.total_variation(load_b, load_v), "lower", None, "", n
            ),
            Metric(
                f"routing_load_js.layer_{layer}",
                kl.js_divergence_bits(load_b, load_v),
                "lower",
                None,
                "bits",
                n,
            ),
        ]
    if agreements:
        mean = sum(agreements) / len(agreements)
        metrics.insert(
            0, Metric("routing_same_experts_mean", mean, "higher", None, "share over layers", len(agreements))
        )
    return metrics


KIND = register_suite(SuiteKind("perplexity", PerplexityConfig, measure, compare, measure_against))
