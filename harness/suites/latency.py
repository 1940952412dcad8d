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

Against the baseline, speed is only ever compared side by side (`measure_beside`): the variant runs its
warm-ups alone (its peak memory is taken then), the baseline is loaded beside it, and for each condition
the two are timed alternately in one window (A B, B A, A B, ...: the order alternates so neither side
always runs first), `repeats` pairs after `warmup` discarded runs of each. Each pair gives a ratio
(variant / baseline throughput); the speedup is their geometric mean, with a 95 % interval from a paired
t-test on the log throughputs (harness.paired.paired_t). A condition whose pair ratios spread more than
`max_cv` (coefficient of variation, stdev / mean) is measured again, up to `retries` times, then reported
as unstable (`unstable.<condition>` = 1, no speedup number). The baseline's own cached timings are never
used for a ratio: a variant measured without its baseline beside it gets no speedup at all.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from harness.backends.base import Backend
from harness.paired import paired_t
from harness.suites.base import Measurement, SuiteConfig, SuiteKind, register_suite
from quantgate.core.errors import InputError
from quantgate.core.metrics import Metric, ratios_to_baseline


class LatencyConfig(SuiteConfig):
    kind: Literal["latency"]
    batch_sizes: list[int] = Field(min_length=1)
    prompt_lengths: list[int] = Field(min_length=1)
    decode_tokens: int = Field(gt=0)
    warmup: int = Field(ge=1)  # repeats run first and discarded
    repeats: int = Field(ge=1)  # timed runs per condition (side by side: pairs)
    seed: int = 0
    max_cv: float = Field(0.10, gt=0)  # side by side: pair ratios spreading more (stdev / mean) are unstable
    retries: int = Field(2, ge=0)  # side by side: an unstable condition is measured again this many times


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


def _condition_metrics(
    config: LatencyConfig, batch: int, length: int, measured: list[tuple[float, float]]
) -> list[Metric]:
    """Throughput (median, min, max) and decode ms per step of one condition's timed runs."""
    condition = f"b{batch}_p{length}"
    decode_ms = 1000 * statistics.median(d for _, d in measured) / config.decode_tokens
    return [
        *_throughput_metrics("prefill_tokens_per_s", batch * length, [p for p, _ in measured], condition),
        *_throughput_metrics("decode_tokens_per_s", batch * config.decode_tokens, [d for _, d in measured], condition),
        Metric(f"decode_ms_per_step.{condition}", decode_ms, "lower", None, "ms", len(measured)),
    ]


def measure(config: LatencyConfig, backend: Backend, out_dir: Path) -> Measurement:
    model = _in_process(config, backend)
    description = backend.describe()
    device = description["device"]
    peak_memory_meaning = _reset_peak_memory(device)
    metrics, samples = [], []
    for batch, length, ids in _prompts(config, backend):
        runs = [
            _prefill_decode(model, ids, config.decode_tokens, device) for _ in range(config.warmup + config.repeats)
        ]
        measured = runs[config.warmup :]
        metrics += _condition_metrics(config, batch, length, measured)
        samples += [
            {"batch_size": batch, "prompt_length": length, "repeat": r, "prefill_s": p, "decode_s": d,
             "decode_tokens": config.decode_tokens}
            for r, (p, d) in enumerate(measured)
        ]
    metrics += _static_metrics(description)
    return Measurement(metrics=metrics, samples=samples, out_dir=out_dir,
                       extra={"conditions": _conditions(config, description, peak_memory_meaning)})


def _in_process(config: LatencyConfig, backend: Backend) -> torch.nn.Module:
    model = getattr(backend, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"suite {config.name}: the latency suite needs an in-process backend, not {backend.name}")
    return model


def _prompts(config: LatencyConfig, backend: Backend) -> list[tuple[int, int, torch.Tensor]]:
    """(batch, prompt length, ids [B, L]) per condition: seeded random ordinary tokens, the same for every model."""
    model = _in_process(config, backend)
    device = backend.describe()["device"]
    special = set(backend.tokenizer.all_special_ids)
    ordinary = torch.tensor([i for i in range(model.config.vocab_size) if i not in special])  # [V']
    generator = torch.Generator().manual_seed(config.seed)
    return [
        (batch, length, ordinary[torch.randint(0, len(ordinary), (batch, length), generator=generator)].to(device))
        for batch in config.batch_sizes
        for length in config.prompt_lengths
    ]


def _static_metrics(description: dict) -> list[Metric]:
    size, bits, _ = checkpoint_size(Path(description["model"]))
    return [
        Metric("peak_memory_bytes", float(_peak_memory(description["device"])), "lower", None, "bytes", 1),
        Metric("checkpoint_bytes", float(size), "lower", None, "bytes", 1),
        Metric("bits_per_weight", bits, "lower", None, "bits", 1),
    ]


def _conditions(config: LatencyConfig, description: dict, peak_memory_meaning: str) -> dict:
    return {
        "device": description["device"],
        "dtype": description["dtype"],
        "threads": description["threads"],
        "cpu_count": description.get("cpu_count"),
        "batch_sizes": config.batch_sizes,
        "prompt_lengths": config.prompt_lengths,
        "decode_tokens": config.decode_tokens,
        "warmup": config.warmup,
        "repeats": config.repeats,
        "size_from": checkpoint_size(Path(description["model"]))[2],
        "peak_memory": peak_memory_meaning,
    }


# -- side by side --------------------------------------------------------------------------------
PHASES = ("prefill", "decode")


def _pairs(
    config: LatencyConfig, models: dict[str, torch.nn.Module], ids: torch.Tensor, device: str
) -> list[dict[str, float | str]]:
    """`repeats` pairs timed back to back, the order alternating (variant first in even pairs)."""
    rows: list[dict[str, float | str]] = []
    for pair in range(config.repeats):
        order = ("variant", "baseline") if pair % 2 == 0 else ("baseline", "variant")
        times = {side: _prefill_decode(models[side], ids, config.decode_tokens, device) for side in order}
        rows.append({
            "pair": pair, "first": order[0],
            "prefill_s": times["variant"][0], "decode_s": times["variant"][1],
            "baseline_prefill_s": times["baseline"][0], "baseline_decode_s": times["baseline"][1],
        })
    return rows


def pair_ratios(rows: list[dict], phase: str) -> list[float]:
    """Variant / baseline throughput of each pair (= baseline seconds / variant seconds)."""
    return [r[f"baseline_{phase}_s"] / r[f"{phase}_s"] for r in rows]


def spread(values: list[float]) -> float:
    """Coefficient of variation, stdev / mean (0 for fewer than two values)."""
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else 0.0


def measure_beside(
    config: LatencyConfig, backend: Backend, out_dir: Path, baseline: Measurement, open_baseline: Callable[[], Backend]
) -> Measurement:
    """The variant timed alternately with its baseline, loaded beside it for this suite only (module doc)."""
    model = _in_process(config, backend)
    description = backend.describe()
    device = description["device"]
    prompts = _prompts(config, backend)
    peak_memory_meaning = _reset_peak_memory(device)
    for _, _, ids in prompts:  # the variant alone: its warm-ups, during which its peak memory is taken
        for _ in range(config.warmup):
            _prefill_decode(model, ids, config.decode_tokens, device)
    static = _static_metrics(description)
    models = {"variant": model, "baseline": _in_process(config, open_baseline())}
    metrics, samples, attempts = [], [], {}
    try:
        for batch, length, ids in prompts:
            for _ in range(config.warmup):  # both warm, in the same window as the pairs
                for side in ("baseline", "variant"):
                    _prefill_decode(models[side], ids, config.decode_tokens, device)
            for attempt in range(config.retries + 1):
                rows = _pairs(config, models, ids, device)
                samples += [r | {"batch_size": batch, "prompt_length": length, "attempt": attempt,
                                 "decode_tokens": config.decode_tokens} for r in rows]
                if max(spread(pair_ratios(rows, phase)) for phase in PHASES) <= config.max_cv:
                    break
            attempts[f"b{batch}_p{length}"] = attempt + 1
            metrics += _condition_metrics(config, batch, length, [(r["prefill_s"], r["decode_s"]) for r in rows])
    finally:
        del models["baseline"]
        gc.collect()
    extra = {
        "conditions": _conditions(config, description, peak_memory_meaning + " (the variant alone, warm-ups)"),
        "side_by_side": {"order": "pairs alternate: variant first in even pairs, baseline first in odd ones",
                         "max_cv": config.max_cv, "retries": config.retries, "attempts": attempts},
    }
    return Measurement(metrics=metrics + static, samples=samples, out_dir=out_dir, extra=extra)


def side_by_side_metrics(config: LatencyConfig, samples: list[dict]) -> list[Metric]:
    """Per condition and phase, from its last attempt: the speedup (geometric mean of the pair ratios) with
    its 95 % interval and spread, or `unstable_<phase>` when the ratios spread more than `max_cv`."""
    by_condition: dict[str, list[dict]] = {}
    for row in samples:
        by_condition.setdefault(f"b{row['batch_size']}_p{row['prompt_length']}", []).append(row)
    last = {c: [r for r in rows if r["attempt"] == max(x["attempt"] for x in rows)] for c, rows in by_condition.items()}
    metrics = []
    for condition, rows in last.items():
        for phase in PHASES:
            ratios, n = pair_ratios(rows, phase), len(rows)
            cv = spread(ratios)
            if cv > config.max_cv:
                metrics.append(Metric(f"unstable_{phase}.{condition}", 1.0, "none", None,
                                      f"pair ratios' CV {cv:.3f} > {config.max_cv}", n))
                continue
            test = paired_t([-math.log(r[f"baseline_{phase}_s"]) for r in rows],
                            [-math.log(r[f"{phase}_s"]) for r in rows])  # log throughput, up to a constant
            speedup = math.exp(test.mean)
            stderr = speedup * test.stderr if test.stderr is not None else None
            metrics += [
                Metric(f"speedup_{phase}.{condition}", speedup, "higher", stderr, "x, side by side", n),
                Metric(f"speedup_{phase}_low.{condition}", math.exp(test.low), "higher", None, "x, 95 % low", n),
                Metric(f"speedup_{phase}_high.{condition}", math.exp(test.high), "higher", None, "x, 95 % high", n),
                Metric(f"speedup_{phase}_cv.{condition}", cv, "none", None, "pair ratios' stdev / mean", n),
            ]
    return metrics


RATIOS = {  # variant / baseline, from each one's own measurement: not timings
    "peak_memory_bytes": "memory_ratio",
    "checkpoint_bytes": "size_ratio",
}


def compare(config: LatencyConfig, variant: Measurement, baseline: Measurement) -> list[Metric]:
    """Memory and size ratios; speedups only from a side-by-side measurement, never from the baseline's own."""
    ratios = ratios_to_baseline(variant.metrics, baseline.metrics, RATIOS)
    if "side_by_side" not in variant.extra:
        return ratios
    return ratios + side_by_side_metrics(config, variant.samples)


KIND = register_suite(SuiteKind("latency", LatencyConfig, measure, compare, measure_beside=measure_beside))
