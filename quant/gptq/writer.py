"""Write a GPTQ checkpoint: the RTN output layout (same shards, names, config, manifest) from per-layer packs.

The per-layer packed tensors (`.gptq-layers/layer-NNNNN.safetensors` in the scratch directory)
are merged shard by shard with the source's other tensors: each output shard holds the same
modules as its source shard, exactly as `quantgate quantize` (RTN) lays them out. A quantized
tensor outside the decoder layers (a user scheme quantizing lm_head) is quantized by RTN here
and reported as a fallback. Written into `.NAME.tmp-PID`, renamed into place at the end.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path

import torch
from compressed_tensors.compressors import ModelCompressor

from quant.build import TMP_MARKER, TOOLS, Outcome
from quant.gptq.layerwise import ShardReader, read_tensor
from quant.rtn import compress_weight
from quant.schemes import Scheme
from quant.select import module_of
from quant.source import SourceCheckpoint
from quant.stream import DTYPES, Entry, ShardWriter, nbytes_of, read_header
from quantgate import __version__
from quantgate.core.checkpoint import CONFIG_NAME, INDEX_NAME, sha256_file
from quantgate.core.errors import InputError
from quantgate.core.gptq import OUTSIDE_LAYERS, CalibrationSet, GPTQOptions, GPTQReport
from quantgate.core.manifest import (
    DEQUANTIZED_NAME,
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

LAYER_DIR = ".gptq-layers"
SAFETENSORS_METADATA = {"format": "pt"}


@dataclass
class Target:
    path: Path
    identity: SourceIdentity
    scheme: ResolvedScheme
    options: GPTQOptions
    calibration: CalibrationSet
    scratch: Path = field(init=False)

    def __post_init__(self) -> None:
        self.scratch = self.path.parent / f".{self.path.name}{TMP_MARKER}{os.getpid()}"


def prepare_target(target: Target) -> Outcome | None:
    """A matching finished checkpoint (returned: reuse it), or a fresh scratch directory (None)."""
    path = target.path
    output_folder(path, option="--out")
    if path.exists() and not (path / MANIFEST_NAME).is_file():
        raise InputError(f"{path}: exists and is not a quantgate checkpoint (no {MANIFEST_NAME})")
    if path.exists():
        existing = load_manifest(path)
        if (
            existing.method == "gptq" and existing.gptq is not None
            and existing.source == target.identity and existing.scheme == target.scheme
            and existing.quantgate_version == __version__
            and existing.gptq.options == target.options and existing.gptq.calibration == target.calibration
            and is_complete(path, existing)
        ):  # fmt: skip
            return Outcome(path=path, reused=True, manifest=existing)
        check_replaceable(path, existing)  # before any work: never delete what the user put there
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}{TMP_MARKER}*"):
        pid = stale.name.rsplit(TMP_MARKER, 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    target.scratch.mkdir()
    return None


def write_checkpoint(
    source: SourceCheckpoint, scheme: Scheme, quantized: frozenset[str], target: Target, report: GPTQReport
) -> Outcome:
    scratch = target.scratch
    compressed_scheme = scheme.quantization.model_copy(update={"format": scheme.format.value})
    by_module: dict[str, dict[str, tuple[Path, Entry]]] = {}  # module -> {packed tensor name: (pack, entry)}
    for pack in sorted((scratch / LAYER_DIR).glob("*.safetensors")):
        for entry in read_header(pack)[1]:
            by_module.setdefault(entry.name.rsplit(".", 1)[0], {})[entry.name] = (pack, entry)
    weight_map: dict[str, str] = {}
    outside = 0
    totals = {"source": 0, "quantized_source": 0, "quantized_bytes": 0, "output": 0}
    reader = ShardReader(source)  # a block-FP8 source's weights dequantized, its scales left out
    for shard in source.shards:
        # name -> (dtype, shape, how to get it): laid out up front, then written one tensor at a time
        output: dict[str, tuple[torch.dtype, tuple[int, ...], Callable[[], torch.Tensor]]] = {}
        for info in source.shard_tensors(shard):
            name, numel = info.name, math.prod(info.shape)
            totals["source"] += numel
            if name not in quantized:
                dtype = torch.bfloat16 if source.is_fp8(name) else DTYPES[info.dtype]
                output[name] = (dtype, info.shape, partial(reader.get, name))
                continue
            module = module_of(name)
            totals["quantized_source"] += numel
            if module in by_module:
                packs = by_module[module].items()
                compressed = {n: (e.dtype, e.shape, partial(read_tensor, p, e)) for n, (p, e) in packs}
            else:  # outside the decoder layers: RTN
                outside += 1
                values = compress_weight(reader.get(name), compressed_scheme)
                compressed = {
                    f"{module}.{k}": (v.dtype, tuple(v.shape), partial(torch.clone, v)) for k, v in values.items()
                }
            output |= compressed
            totals["quantized_bytes"] += sum(nbytes_of(dtype, shape) for dtype, shape, _ in compressed.values())
        totals["output"] += sum(nbytes_of(dtype, shape) for dtype, shape, _ in output.values())
        writer = ShardWriter(scratch / shard, [(n, d, s) for n, (d, s, _) in output.items()], SAFETENSORS_METADATA)
        try:
            for out_name, (_, _, get) in output.items():
                writer.write(out_name, get())
            writer.close()
        except BaseException:
            writer.abort()
            raise
        weight_map.update({name: shard for name in output})
    shutil.rmtree(scratch / LAYER_DIR)
    index = {"metadata": {"total_size": totals["output"]}, "weight_map": dict(sorted(weight_map.items()))}
    (scratch / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    _copy_side_files(source, scratch)
    config = {k: v for k, v in source.config.items() if k != "quantization_config"}
    (scratch / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    ModelCompressor(quantization_config=scheme.quantization_config()).update_config(str(scratch))

    if outside:
        report = report.model_copy(update={"fallbacks": report.fallbacks | {OUTSIDE_LAYERS: outside}})
    files = {
        path.name: OutputFile(sha256=sha256_file(path), bytes=path.stat().st_size)
        for path in sorted(scratch.iterdir())
        if path.name != MANIFEST_NAME
    }
    manifest = Manifest(
        quantgate_version=__version__,
        method="gptq",
        source=target.identity,
        scheme=target.scheme,
        tools={name: version(name) for name in TOOLS},
        files=files,
        total_bytes=sum(f.bytes for f in files.values()),
        source_bytes=sum((source.path / s).stat().st_size for s in source.shards),
        bits_per_weight=BitsPerWeight(
            quantized=8 * totals["quantized_bytes"] / totals["quantized_source"],
            overall=8 * totals["output"] / totals["source"],
        ),
        quantized_tensors=len(quantized),
        gptq=report,
        source_format=source.fp8,
    )
    write_manifest(scratch, manifest)
    if target.path.exists():
        shutil.rmtree(target.path)
    scratch.rename(target.path)
    return Outcome(path=target.path, reused=False, manifest=manifest)


def _copy_side_files(source: SourceCheckpoint, scratch: Path) -> None:
    """Tokenizer, chat template, generation config: every other top-level file, as is (as RTN does)."""
    skip = {INDEX_NAME, CONFIG_NAME, MANIFEST_NAME, DEQUANTIZED_NAME, *source.shards}
    for path in sorted(source.path.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name not in skip and path.suffix != ".safetensors":
            shutil.copyfile(path, scratch / path.name)
