"""Suite `latency`: prefill and decode throughput, peak memory, checkpoint size and bits per weight.

Conditions (stated with every number in summary.json): batch size, prompt length, decode tokens,
device, dtype, threads. Warm-up repeats are run and discarded; the device is synchronised before
each clock stops; the value is the median over `repeats`, the spread is min/max and the stderr is
the standard error of the mean over repeats. Prefill = one forward of the prompt building the KV
cache; decode = `decode_tokens` greedy steps, one token per sequence per step, on that cache.
Prompts are seeded random token ids (no special tokens), so the numbers do not depend on text.

Peak memory is the process high-water mark during this suite: on CPU VmHWM from /proc/self/status
after resetting it (`/proc/self/clear_refs`), on GPU torch.cuda.max_memory_allocated after a reset.
Checkpoint bytes and bits per weight come from the manifest (`quantgate.json`); a checkpoint without
one (the BF16 baseline) is measured from its safetensors headers the same way the manifest counts.

This suite needs an in-process backend (`backend.model`, a transformers model); its values are
timings, so unlike the other suites its summary.json is not byte-stable between runs.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from harness.backends.base import Backend
from harness.suites.base import Measurement, SuiteConfig, SuiteKind, register_suite
from quantgate.core.errors import InputError
from quantgate.core.metrics import Metric, ratios_to_baseline


class LatencyConfig(SuiteConfig):
    kind: Literal["latency"]
    batch_sizes: list[int] = Field(min_length=1)
    prompt_lengths: list[int] = Field(min_length=1)
    decode_tokens: int = Field(gt=0)
    warmup: int = Field(ge=1)  # repeats run first and discarded
    repeats: int = Field(ge=1)
    seed: int = 0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak_memory(device: str) -> str:
    """Reset the high-water mark; say what the peak will mean."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return "torch.cuda.max_memory_allocated during this suite"
    try:
        with open("/proc/self/clear_refs", "w") as handle:  # "5": reset the peak resident set size (VmHWM)
            handle.write("5")
    except OSError:
        return "process VmHWM since start (could not reset it)"
    return "process VmHWM (peak RSS) during this suite"


def _peak_memory(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM")


@torch.no_grad()
def _prefill_decode(
    model: torch.nn.Module, ids: torch.Tensor, decode_tokens: int, device: str
) -> tuple[float, float]:
    """Seconds for the prefill of ids [B, L] and for `decode_tokens` greedy steps after it."""
    _sync(device)
    start = time.perf_counter()
    out = model(input_ids=ids, use_cache=True)
    _sync(device)
    prefill = time.perf_counter() - start
    cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
    start = time.perf_counter()
    for _ in range(decode_tokens):
        out = model(input_ids=token, cache=cache, use_cache=True)
        cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
    _sync(device)
    return prefill, time.perf_counter() - start


def _throughput_metrics(name: str, tokens: int, seconds: list[float], condition: str) -> list[Metric]:
    rates = [tokens / s for s in seconds]
    stderr = statistics.stdev(rates) / math.sqrt(len(rates)) if len(rates) > 1 else None
    return [
        Metric(f"{name}.{condition}", statistics.median(rates), "higher", stderr, "tokens/s", len(rates)),
        Metric(f"{name}_min.{condition}", min(rates), "none", None, "tokens/s", len(rates)),
        Metric(f"{name}_max.{condition}", max(rates), "none", None, "tokens/s", len(rates)),
    ]


def checkpoint_size(model_dir: Path) -> tuple[int, float, str]:
    """(bytes, bits per weight overall, where it came from)."""
    from quantgate.core.checkpoint import MANIFEST_NAME, stored_bits_per_weight, stored_size
    from quantgate.core.manifest import load_manifest

    if (model_dir / MANIFEST_NAME).is_file():
        manifest = load_manifest(model_dir)
        return manifest.total_bytes, manifest.bits_per_weight.overall, MANIFEST_NAME
    shard_bytes, _ = stored_size(model_dir)
    return shard_bytes, stored_bits_per_weight(model_dir)[1], "safetensors shards"


def measure(config: LatencyConfig, backend: Backend, out_dir: Path) -> Measurement:
    model = getattr(backend, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise InputError(
            f"suite {config.name}: the latency suite needs an in-process backend, not {backend.name}"
        )
    description = backend.describe()
    device = description["device"]
    special = set(backend.tokenizer.all_special_ids)
    ordinary = torch.tensor([i for i in range(model.config.vocab_size) if i not in special])  # [V']
    generator = torch.Generator().manual_seed(config.seed)
    peak_memory_meaning = _reset_peak_memory(device)
    metrics, samples = [], []
    for batch in config.batch_sizes:
        for length in config.prompt_lengths:
            ids = ordinary[torch.randint(0, len(ordinary), (batch, length), generator=generator)].to(
                device
            )  # [B, L]
            runs = [
                _prefill_decode(model, ids, config.decode_tokens, device)
                for _ in range(config.warmup + config.repeats)
            ]
            measured = runs[config.warmup :]
            condition = f"b{batch}_p{length}"
            metrics += _throughput_metrics(
                "prefill_tokens_per_s", batch * length, [p for p, _ in measured], condition
            )
            metrics += _throughput_metrics(
                "decode_tokens_per_s", batch * config.decode_tokens, [d for _, d in measured], condition
            )
            metrics.append(
                Metric(
                    f"decode_ms_per_step.{condition}",
                    1000 * statistics.median(d for _, d in measured) / config.decode_tokens,
                    "lower",
                    None,
                    "ms",
                    len(measured),
                )
            )
            samples += [
                {
                    "batch_size": batch,
                    "prompt_length": length,
                    "repeat": r,
                    "prefill_s": p,
                    "decode_s": d,
                    "decode_tokens": config.decode_tokens,
                }
                for r, (p, d) in enumerate(measured)
            ]
    size, bits, size_source = checkpoint_size(Path(description["model"]))
    metrics += [
        Metric("peak_memory_bytes", float(_peak_memory(device)), "lower", None, "bytes", 1),
        Metric("checkpoint_bytes", float(size), "lower", None, "bytes", 1),
        Metric("bits_per_weight", bits, "lower", None, "bits", 1),
    ]
    conditions = {
        "device": device,
        "dtype": description["dtype"],
        "threads": description["threads"],
        "cpu_count": description.get("cpu_count"),
        "batch_sizes": config.batch_sizes,
        "prompt_lengths": config.prompt_lengths,
        "decode_tokens": config.decode_tokens,
        "warmup": config.warmup,
        "repeats": config.repeats,
        "size_from": size_source,
        "peak_memory": peak_memory_meaning,
    }
    return Measurement(metrics=metrics, samples=samples, out_dir=out_dir, extra={"conditions": conditions})


RATIOS = {  # variant / baseline; the direction of the ratio follows its metric's
    "prefill_tokens_per_s": "speedup_prefill",
    "decode_tokens_per_s": "speedup_decode",
    "peak_memory_bytes": "memory_ratio",
    "checkpoint_bytes": "size_ratio",
}


def compare(config: LatencyConfig, variant: Measurement, baseline: Measurement) -> list[Metric]:
    return ratios_to_baseline(variant.metrics, baseline.metrics, RATIOS)


KIND = register_suite(SuiteKind("latency", LatencyConfig, measure, compare))
