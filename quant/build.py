"""Build one quantized checkpoint: atomically, reproducibly, and reusing a matching finished one.

The output is written into `.NAME.tmp-PID` beside the target and renamed into place at the end,
so a killed run never leaves something that looks finished. Outputs carry no timestamps and
JSON is written with sorted keys, so the same request gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

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
from quantgate.core.manifest import (
    MANIFEST_NAME,
    BitsPerWeight,
    Manifest,
    OutputFile,
    ResolvedScheme,
    SourceIdentity,
    check_replaceable,
    is_complete,
    load_manifest,
    write_manifest,
)
from quantgate.core.paths import output_folder

METHOD = "rtn"
TOOLS = ("torch", "compressed-tensors", "transformers", "safetensors")
TMP_MARKER = ".tmp-"


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

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    scratch = target.parent / f".{target.name}{TMP_MARKER}{os.getpid()}"
    try:
        scratch.mkdir()
        manifest = _write_checkpoint(source, request, plan.quantized, scratch, resolved, hasher)
        if target.exists():  # an outdated quantgate checkpoint (checked above): replace it
            shutil.rmtree(target)
        scratch.rename(target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Outcome(path=target, reused=False, manifest=manifest)


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
    jobs = [
        ShardJob(
            source=source.path / shard,
            target=scratch / shard,
            quantized=frozenset(n for n in quantized if source.tensors[n].shard == shard),
            scheme_json=group.model_dump_json(),
        )
        for shard in source.shards
    ]
    results = _run_jobs(jobs, request.workers, scratch, hasher)
    _copy_side_files(source, scratch)
    config = {k: v for k, v in source.config.items() if k != "quantization_config"}
    (scratch / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
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
    """Tokenizer, chat template, generation config, remote code: every other top-level file, as is."""
    skip = {INDEX_NAME, CONFIG_NAME, MANIFEST_NAME, *source.shards}
    for path in sorted(source.path.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name not in skip:
            if path.suffix != ".safetensors":
                shutil.copyfile(path, scratch / path.name)
