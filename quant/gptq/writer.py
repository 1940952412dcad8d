"""Write a GPTQ checkpoint: the RTN output layout (same shards, names, config, manifest) from per-layer packs.

The per-layer packed tensors (`.gptq-layers/layer-NNNNN.safetensors` in the scratch directory)
are merged shard by shard with the source's other tensors: each output shard holds the same
modules as its source shard, exactly as `quantgate quantize` (RTN) lays them out. A quantized
tensor outside the decoder layers (a user scheme quantizing lm_head) is quantized by RTN here
and reported as a fallback. Written into `.NAME.tmp-PID`, renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import torch
from compressed_tensors.compressors import ModelCompressor
from safetensors import safe_open
from safetensors.torch import save_file

from quant.build import TMP_MARKER, TOOLS, Outcome
from quant.gptq.layerwise import ShardReader
from quant.rtn import compress_weight
from quant.schemes import Scheme
from quant.select import module_of
from quant.source import SourceCheckpoint
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


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def write_checkpoint(
    source: SourceCheckpoint, scheme: Scheme, quantized: frozenset[str], target: Target, report: GPTQReport
) -> Outcome:
    scratch = target.scratch
    compressed_scheme = scheme.quantization.model_copy(update={"format": scheme.format.value})
    packs = {p: safe_open(p, framework="pt") for p in sorted((scratch / LAYER_DIR).glob("*.safetensors"))}
    by_module: dict[str, dict[str, object]] = {}  # module -> {packed tensor name: its pack}
    for handle in packs.values():
        for name in handle.keys():
            by_module.setdefault(name.rsplit(".", 1)[0], {})[name] = handle
    weight_map: dict[str, str] = {}
    outside = 0
    totals = {"source": 0, "quantized_source": 0, "quantized_bytes": 0, "output": 0}
    reader = ShardReader(source)  # a block-FP8 source's weights dequantized, its scales left out
    for shard in source.shards:
        output: dict[str, torch.Tensor] = {}
        for info in source.shard_tensors(shard):
            name, tensor = info.name, reader.get(info.name)
            totals["source"] += tensor.numel()
            if name not in quantized:
                output[name] = tensor
                continue
            module = module_of(name)
            totals["quantized_source"] += tensor.numel()
            if module in by_module:
                compressed = {n: h.get_tensor(n) for n, h in sorted(by_module[module].items())}
            else:  # outside the decoder layers: RTN
                outside += 1
                compressed = {f"{module}.{k}": v for k, v in compress_weight(tensor, compressed_scheme).items()}
            for out_name, value in compressed.items():
                output[out_name] = value
                totals["quantized_bytes"] += _nbytes(value)
        save_file(output, scratch / shard, metadata=SAFETENSORS_METADATA)
        totals["output"] += sum(_nbytes(t) for t in output.values())
        weight_map.update({name: shard for name in output})
    packs.clear()
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
