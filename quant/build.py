"""Build one quantized checkpoint: atomically, reproducibly, and reusing a matching finished one.

The output is written into `.NAME.tmp-PID` beside the target and renamed into place at the end,
so a killed run never leaves something that looks finished. Outputs carry no timestamps and
JSON is written with sorted keys, so the same request gives byte-identical files.

A block-FP8 source (DeepSeek/Kimi release, quantgate.core.fp8) is quantized straight from FP8:
each shard job dequantizes its FP8 weights as it streams them (quant.shards). `write_bf16` is the
`bf16` target: the same streaming path with nothing quantized, i.e. the BF16 checkpoint DeepSeek's
reference conversion makes, in the source's shard layout.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar

import torch
from compressed_tensors.compressors import ModelCompressor

from quant.prefetch import SourceHasher, start_hasher
from quant.schemes import Scheme
from quant.select import plan_quantization
from quant.shards import ShardJob, ShardResult, quantize_shard
from quant.source import SourceCheckpoint, load_source
from quantgate import __version__
from quantgate.core.checkpoint import CONFIG_NAME, INDEX_NAME, sha256_file
from quantgate.core.errors import InputError
from quantgate.core.fp8 import BF16_TARGET
from quantgate.core.manifest import (
    DEQUANTIZED_NAME,
    MANIFEST_NAME,
    BitsPerWeight,
    DequantizedRecord,
    Manifest,
    OutputFile,
    ResolvedScheme,
    SourceIdentity,
    check_replaceable,
    is_complete,
    load_manifest,
    write_dequantized_record,
    write_manifest,
)
from quantgate.core.paths import output_folder

T = TypeVar("T")

METHOD = "rtn"
TOOLS = ("torch", "compressed-tensors", "transformers", "safetensors")
TMP_MARKER = ".tmp-"
BF16_NOTE = (
    "BF16 weights of a block-FP8 checkpoint: weight.float() * weight_scale_inv per block, cast to BF16 "
    "(DeepSeek's fp8_cast_bf16.py)"
)


@dataclass(frozen=True)
class QuantizeRequest:
    model: Path
    scheme: Scheme
    out: Path | None = None  # exact output directory
    output_root: Path | None = None  # else: directory for the default-named output (default: beside model)
    workers: int = 1


@dataclass(frozen=True)
class Outcome:
    path: Path
    reused: bool
    manifest: Manifest


def default_output(model: Path, scheme: Scheme, output_root: Path | None = None) -> Path:
    """e.g. models/kimi-k2-tiny-kimi-k2-thinking-int4-rtn, beside the source unless a root is given."""
    return (output_root or model.parent) / f"{model.name}-{scheme.name}-{METHOD}"


def resolve_scheme(scheme: Scheme) -> ResolvedScheme:
    return ResolvedScheme(
        name=scheme.name,
        scheme_version=scheme.version,
        ignore=list(scheme.ignore),
        quantization_config=scheme.quantization_config().model_dump(mode="json"),
    )


def quantize(request: QuantizeRequest, hasher: SourceHasher | None = None) -> Outcome:
    """Build the checkpoint (or reuse it). `hasher`: one the caller started with `start_hasher` on the
    same model and closes itself; by default one is started and closed here."""
    if request.workers < 1:
        raise InputError(f"--workers must be at least 1, got {request.workers}")
    model = request.model.resolve()
    if hasher is not None:  # the caller's: the caller closes it
        return _quantize(request, model, hasher)
    hasher = start_hasher(model, request.workers)
    try:
        return _quantize(request, model, hasher)
    finally:
        hasher.close()


def _quantize(request: QuantizeRequest, model: Path, hasher: SourceHasher) -> Outcome:
    source = load_source(model)
    plan = plan_quantization(source, request.scheme)
    target = (request.out or default_output(model, request.scheme, request.output_root)).resolve()
    output_folder(target, option="--out")
    if target.exists() and not (target / MANIFEST_NAME).is_file():
        raise InputError(f"{target}: exists and is not a quantgate checkpoint (no {MANIFEST_NAME})")
    resolved = resolve_scheme(request.scheme)

    if target.exists():
        existing = load_manifest(target)
        identity = SourceIdentity(
            name=model.name,
            index_sha256=source.index_sha256(),
            shard_sha256={shard: hasher.sha256(model / shard) for shard in source.shards},
        )
        if (
            existing.source == identity
            and existing.method == METHOD  # never a GPTQ checkpoint of the same scheme
            and existing.scheme == resolved
            and existing.quantgate_version == __version__
            and is_complete(target, existing)
        ):
            return Outcome(path=target, reused=True, manifest=existing)
        check_replaceable(target, existing)  # before any work: never delete what the user put there

    manifest = _atomically(target, lambda scratch: _write_checkpoint(source, request, plan.quantized, scratch,
                                                                     resolved, hasher))  # fmt: skip
    return Outcome(path=target, reused=False, manifest=manifest)


def _atomically(target: Path, write: Callable[[Path], T]) -> T:
    """`write(scratch)` into a temporary folder beside `target`, renamed to `target` when it returns."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    scratch = target.parent / f".{target.name}{TMP_MARKER}{os.getpid()}"
    try:
        scratch.mkdir()
        result = write(scratch)
        if target.exists():  # an outdated quantgate checkpoint (checked by the caller): replace it
            shutil.rmtree(target)
        scratch.rename(target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return result


def write_bf16(model: Path, out: Path | None = None, workers: int = 1, hasher: SourceHasher | None = None) -> Path:
    """The `bf16` target: a block-FP8 checkpoint's BF16 weights (as DeepSeek's reference conversion makes
    them), streamed into the source's shard layout, with `quantgate.dequantized.json` saying so."""
    model = model.resolve()
    own = hasher is None
    hasher = hasher or start_hasher(model, workers)
    try:
        source = load_source(model)
        if source.fp8 is None:
            raise InputError(
                f"{model / CONFIG_NAME}: --scheme {BF16_TARGET} dequantizes a block-FP8 checkpoint; this one is BF16"
            )
        target = (out or model.parent / f"{model.name}-{BF16_TARGET}").resolve()
        output_folder(target, option="--out")
        if target.exists():
            raise InputError(f"{target}: exists; remove it or choose another --out")
        record = DequantizedRecord(
            dequantized_from=str(model), config_sha256=sha256_file(model / CONFIG_NAME), note=BF16_NOTE
        )

        def write(scratch: Path) -> None:
            _run_jobs(_shard_jobs(source, frozenset(), scratch, None), workers, scratch, hasher)
            _copy_side_files(source, scratch)
            _write_config(source, scratch)
            write_dequantized_record(scratch, record)

        _atomically(target, write)
        return target
    finally:
        if own:
            hasher.close()


def _shard_jobs(
    source: SourceCheckpoint, quantized: frozenset[str], scratch: Path, scheme_json: str | None
) -> list[ShardJob]:
    """One job per source shard; a block-FP8 source's jobs name where each FP8 weight's scale is."""
    block = source.fp8.weight_block_size if source.fp8 is not None else None
    return [
        ShardJob(
            source=source.path / shard,
            target=scratch / shard,
            quantized=frozenset(n for n in quantized if source.tensors[n].shard == shard),
            scheme_json=scheme_json,
            fp8_block=block,
            fp8_scales={
                weight: source.path / scale.shard
                for weight, scale in source.scales.items()
                if source.tensors[weight].shard == shard
            },
            skipped=frozenset(scale.name for scale in source.scales.values() if scale.shard == shard),
        )
        for shard in source.shards
    ]


def _write_config(source: SourceCheckpoint, scratch: Path) -> None:
    """The source's config.json without its quantization_config (a block-FP8 source's is dropped)."""
    config = {k: v for k, v in source.config.items() if k != "quantization_config"}
    (scratch / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _remove_stale_temporaries(target: Path) -> None:
    """Temporaries of killed runs on the same target (their process is gone)."""
    for stale in target.parent.glob(f".{target.name}{TMP_MARKER}*"):
        pid = stale.name.rsplit(TMP_MARKER, 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_checkpoint(
    source: SourceCheckpoint,
    request: QuantizeRequest,
    quantized: frozenset[str],
    scratch: Path,
    resolved: ResolvedScheme,
    hasher: SourceHasher,
) -> Manifest:
    scheme = request.scheme
    group = scheme.quantization.model_copy(update={"format": scheme.format.value})
    jobs = _shard_jobs(source, quantized, scratch, group.model_dump_json())
    results = _run_jobs(jobs, request.workers, scratch, hasher)
    _copy_side_files(source, scratch)
    _write_config(source, scratch)
    # compressed-tensors writes quantization_config (with its version) into config.json itself
    ModelCompressor(quantization_config=scheme.quantization_config()).update_config(str(scratch))

    shards = {r.shard: OutputFile(sha256=r.sha256, bytes=r.bytes) for r in results}  # hashed as written
    files = {
        path.name: shards.get(path.name) or OutputFile(sha256=sha256_file(path), bytes=path.stat().st_size)
        for path in sorted(scratch.iterdir())
        if path.name != MANIFEST_NAME
    }
    identity = SourceIdentity(
        name=source.path.name,
        index_sha256=source.index_sha256(),
        shard_sha256={job.source.name: r.source_sha256 for job, r in zip(jobs, results, strict=True)},
    )
    source_elements = sum(r.source_elements for r in results)
    quantized_elements = sum(r.quantized_source_elements for r in results)
    manifest = Manifest(
        quantgate_version=__version__,
        method=METHOD,
        source=identity,
        scheme=resolved,
        tools={name: version(name) for name in TOOLS},
        files=files,
        total_bytes=sum(f.bytes for f in files.values()),
        source_bytes=sum((source.path / s).stat().st_size for s in source.shards),
        bits_per_weight=BitsPerWeight(
            quantized=8 * sum(r.quantized_bytes for r in results) / quantized_elements,
            overall=8 * sum(r.output_bytes for r in results) / source_elements,
        ),
        quantized_tensors=len(quantized),
        source_format=source.fp8,
    )
    write_manifest(scratch, manifest)
    return manifest


def _run_jobs(jobs: list[ShardJob], workers: int, scratch: Path, hasher: SourceHasher) -> list[ShardResult]:
    """Shards in `workers` threads of this process (the kernels, writes and hashing release the
    GIL), each with its share of torch's threads, in the hasher's order (largest first); the index
    is rewritten as each shard lands. Results come back in the order of `jobs`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    position = {path: i for i, path in enumerate(hasher.order)}
    order = sorted(range(len(jobs)), key=lambda i: position[jobs[i].source])
    try:
        if workers == 1:  # in this thread (so that a profiler sees it)
            results: dict[int, ShardResult] = {}
            for i in order:
                results[i] = quantize_shard(jobs[i], hasher)
                _write_index(scratch, list(results.values()))
            return [results[i] for i in range(len(jobs))]
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            futures = {i: pool.submit(quantize_shard, jobs[i], hasher) for i in order}
            done: list[ShardResult] = []
            try:
                for i in order:
                    done.append(futures[i].result())
                    _write_index(scratch, done)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
            return [futures[i].result() for i in range(len(jobs))]
    finally:
        torch.set_num_threads(threads)


def _write_index(scratch: Path, results: list[ShardResult]) -> None:
    weight_map = {name: r.shard for r in results for name in r.tensor_names}
    total = sum(r.output_bytes for r in results)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (scratch / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _copy_side_files(source: SourceCheckpoint, scratch: Path) -> None:
    """Tokenizer, chat template, generation config, remote code: every other top-level file, as is
    (not quantgate's records of how the source was made)."""
    skip = {INDEX_NAME, CONFIG_NAME, MANIFEST_NAME, DEQUANTIZED_NAME, *source.shards}
    for path in sorted(source.path.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name not in skip:
            if path.suffix != ".safetensors":
                shutil.copyfile(path, scratch / path.name)
