"""Typed GPTQ options, the calibration asked for, and what a GPTQ run reports in `quantgate.json` (field `gptq`).

Only pydantic here: `quantgate quantize` builds its flags from these defaults without importing torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantgate.core.strict import StrictModel

# Why a module was quantized by round-to-nearest instead of GPTQ.
FEW_TOKENS = "few_tokens"  # a routed expert that received fewer than `min_expert_tokens` calibration tokens
HESSIAN = "hessian"  # non-finite Hessian, or Cholesky failed at every dampening tried
OUTSIDE_LAYERS = "outside_layers"  # a quantized tensor outside the decoder layers (e.g. lm_head)
FALLBACK_REASONS = (FEW_TOKENS, HESSIAN, OUTSIDE_LAYERS)




DEFAULT_CALIBRATION_SOURCES = (
    "text:suites/data/tinyk2/heldout_text.jsonl[0:100]",
    "chat:suites/data/tinyk2/toolcall_scenarios.jsonl",
)


class CalibrationSpec(StrictModel):
    """Calibration sources (`KIND:PATH[START:STOP]`, quant.gptq.calibration) and how they are cut."""

    sources: tuple[str, ...] = DEFAULT_CALIBRATION_SOURCES
    samples: int = 64
    sample_length: int = 256
    seed: int = 0


class GPTQOptions(StrictModel):
    block_size: int = Field(128, ge=1)
    # fraction of mean(diag H) added to the diagonal; 0.01 (llm-compressor's) measured better at 4 bits, 0.1 kept
    # at 3 bits and below (SCHEME_DEFAULTS; docs/gptq.md)
    dampening: float = Field(0.01, gt=0)
    actorder: Literal["none", "static"] = "static"  # compressed-tensors ActivationOrdering; static == weight
    observer: Literal["minmax", "mse"] = "minmax"  # how the fixed scales are chosen before GPTQ
    min_expert_tokens: int = Field(16, ge=0)  # fewer routed tokens: the expert falls back to RTN
    calibrate_all_experts: bool = False  # every expert's Hessian sees every token (output stays routed)
    routing_weighted: bool = False  # weight each routed token's Hessian term by its routing weight squared
    # X^T X accumulator: float32 as llm-compressor (equal quality measured, half the accumulation time)
    hessian_dtype: Literal["float64", "float32"] = "float32"
    batch_size: int = Field(8, ge=1)  # calibration rows per forward
    threads: int = Field(1, ge=1)  # torch threads per process; BLAS reduction order (so the bytes) depends on it

    @classmethod
    def for_scheme(cls, scheme: str, **given: object) -> GPTQOptions:
        """A scheme's defaults (SCHEME_DEFAULTS over the field defaults), the options given explicitly on top."""
        return cls(**(SCHEME_DEFAULTS.get(scheme, {}) | given))


# Per-scheme defaults where a setting measured better on one scheme and worse on another
# (bench/gptq_factors.py, docs/benchmarks/gptq_factors.md; docs/gptq.md "Defaults and why").
SCHEME_DEFAULTS: dict[str, dict[str, object]] = {
    # mse scales: lower held-out KL and perplexity than minmax on both models measured, and below every
    # llm-compressor row (docs/benchmarks/gptq_defaults_vs_peer.md); a fallback then gets mse-scale RTN
    "w4a16-g128": {"observer": "mse"},
    "w3a16-g32": {"dampening": 0.1, "observer": "mse"},  # 0.1 keeps the margin over RTN at 3 bits
    "w2a16-g32": {"dampening": 0.1},  # not measured apart: dampening as at 3 bits
}


class CalibrationSet(StrictModel):
    sources: tuple[str, ...]
    samples: int
    sample_length: int
    seed: int
    documents: int
    sha256: str  # of the token ids, int64 little-endian, row-major


class LayerStats(StrictModel):
    layer: int
    quantized_modules: int
    gptq_loss: float  # sum over GPTQ-quantized modules of GPTQ's error sum((w-q)^2 / d^2) / 2
    worst_module: str | None  # the module with the largest GPTQ loss
    worst_loss: float
    relative_weight_change: float  # ||W_q - W||_F / ||W||_F over the layer's quantized modules
    tokens_per_expert: list[int] | None  # routed calibration tokens per expert (MoE layers)
    fallbacks: dict[str, list[str]]  # reason -> modules (layer-local names) quantized by RTN instead
    dampened: dict[str, float]  # module -> dampening fraction used, where more than the option was needed


class GPTQReport(StrictModel):
    options: GPTQOptions
    calibration: CalibrationSet
    layers: list[LayerStats]
    fallbacks: dict[str, int]  # reason -> modules, over the whole model
