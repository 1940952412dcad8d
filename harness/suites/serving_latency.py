"""Suite `serving_latency`: latency as a serving engine's client sees it, through an endpoint backend.

Per (concurrency C, prompt length L): `requests` streamed /v1/completions requests of L seeded random
ordinary tokens each (no special tokens), `output_tokens` generated each (`ignore_eos`, `min_tokens`),
at most C in flight. Measured per request from the client: time to first token (TTFT), inter-token
latency (ITL: gaps between streamed chunks that carry text), end-to-end time; per level: output
tokens per second (all output tokens / wall time of the level) and requests per second.
Percentiles (median, p90, p99) and means; warm-up requests first, discarded. Timings are never
journalled (a rerun measures again). Values are timings: summary.json is not byte-stable.

A checkpoint served as its BF16 dequantization (vLLM CPU cannot run pack-quantized MoE) carries
`quantgate.dequantized.json`: the result then says its latency is not the quantized kernel's.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from harness.backends.base import Backend
from harness.kl import percentiles
from harness.suites.base import Measurement, SuiteConfig, SuiteKind, register_suite
from quantgate.core.errors import InputError
from quantgate.core.manifest import load_dequantized_record
from quantgate.core.metrics import Metric, ratios_to_baseline


class ServingLatencyConfig(SuiteConfig):
    kind: Literal["serving_latency"]
    concurrency: list[int] = Field(min_length=1)
    prompt_lengths: list[int] = Field(min_length=1)
    output_tokens: int = Field(gt=1)
    requests: int = Field(gt=0)  # per (concurrency, prompt length)
    warmup: int = Field(1, ge=0)  # requests per level, discarded
    seed: int = 0


def _prompts(backend: Backend, count: int, length: int, generator: torch.Generator) -> list[list[int]]:
    special = set(backend.tokenizer.all_special_ids)
    ordinary = torch.tensor([i for i in range(len(backend.tokenizer)) if i not in special])  # [V']
    return ordinary[torch.randint(0, len(ordinary), (count, length), generator=generator)].tolist()


def _request(backend: Backend, prompt: list[int], output_tokens: int) -> dict:
    return {
        "model": backend.endpoint.model,
        "prompt": prompt,
        "max_tokens": output_tokens,
        "min_tokens": output_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _stats(name: str, values: list[float], unit: str, condition: str, direction: str = "lower") -> list[Metric]:
    if not values:
        return []
    table = percentiles(torch.tensor(values))
    n = len(values)
    return [
        Metric(f"{name}_mean.{condition}", statistics.fmean(values), direction, None, unit, n),
        Metric(f"{name}_p50.{condition}", table["median"], direction, None, unit, n),
        Metric(f"{name}_p90.{condition}", table["p90"], "none", None, unit, n),
        Metric(f"{name}_p99.{condition}", table["p99"], "none", None, unit, n),
    ]


def measure(config: ServingLatencyConfig, backend: Backend, out_dir: Path) -> Measurement:
    client = getattr(backend, "client", None)
    if client is None or not hasattr(backend, "endpoint"):
        raise InputError(f"suite {config.name}: serving_latency needs an endpoint backend (openai), not {backend.name}")
    generator = torch.Generator().manual_seed(config.seed)
    metrics, samples = [], []
    for concurrency in config.concurrency:
        for length in config.prompt_lengths:
            condition = f"c{concurrency}_p{length}_o{config.output_tokens}"
            prompts = _prompts(backend, config.warmup + config.requests, length, generator)
            bodies = [_request(backend, p, config.output_tokens) for p in prompts]
            if config.warmup:
                client.post_many("/v1/completions", bodies[: config.warmup], journal=False, concurrency=concurrency)
            started = time.perf_counter()
            responses = client.post_many(
                "/v1/completions", bodies[config.warmup :], journal=False, concurrency=concurrency
            )
            wall = time.perf_counter() - started
            ttft, itl, e2e, tokens = [], [], [], 0
            for index, response in enumerate(responses):
                times = response["timing"]["chunk_times"]
                produced = (response.get("usage") or {}).get("completion_tokens", len(times))
                tokens += produced
                ttft.append(times[0] if times else response["timing"]["end"])
                itl += [b - a for a, b in zip(times, times[1:], strict=False)]
                e2e.append(response["timing"]["end"])
                samples.append(
                    {
                        "concurrency": concurrency,
                        "prompt_length": length,
                        "request": index,
                        "ttft_s": ttft[-1],
                        "e2e_s": e2e[-1],
                        "output_tokens": produced,
                        "chunks": len(times),
                    }
                )
            metrics += _stats("ttft_ms", [1000 * t for t in ttft], "ms", condition)
            metrics += _stats("itl_ms", [1000 * t for t in itl], "ms", condition)
            metrics += _stats("e2e_ms", [1000 * t for t in e2e], "ms", condition)
            metrics += [
                Metric(f"output_tokens_per_s.{condition}", tokens / wall, "higher", None, "tokens/s", len(responses)),
                Metric(
                    f"requests_per_s.{condition}", len(responses) / wall, "higher", None, "requests/s", len(responses)
                ),
            ]
    tokenizer_dir = Path(backend.describe().get("tokenizer", ""))
    dequantized = load_dequantized_record(tokenizer_dir) is not None
    extra = {
        "conditions": config.model_dump(mode="json") | {"endpoint": backend.describe()},
        "kernel": "BF16 dequantization of a quantized checkpoint: NOT the quantized kernel's latency"
        if dequantized
        else "as served",
    }
    return Measurement(metrics=metrics, samples=samples, out_dir=out_dir, extra=extra)


RATIOS = {"ttft_ms_p50": "ttft_ratio_p50", "itl_ms_p50": "itl_ratio_p50", "output_tokens_per_s": "throughput_ratio"}


def compare(config: ServingLatencyConfig, variant: Measurement, baseline: Measurement) -> list[Metric]:
    """variant / baseline per condition, for median TTFT, median ITL and output tokens/s."""
    return ratios_to_baseline(variant.metrics, baseline.metrics, RATIOS)


KIND = register_suite(SuiteKind("serving_latency", ServingLatencyConfig, measure, compare))
