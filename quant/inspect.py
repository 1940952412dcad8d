"""Describe a quantized checkpoint: scheme, what is quantized and how, per MoE group, and its size.

Reads only the manifest, config.json and safetensors headers (no tensor data). A checkpoint made
elsewhere (no manifest: llm-compressor, a release) is described from its `quantization_config`
and its shards; its source is then unknown, its bits per weight counted from the shards
(quantgate.core.checkpoint.stored_bits_per_weight).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from quantgate.core.checkpoint import (
    CONFIG_NAME,
    INDEX_NAME,
    MANIFEST_NAME,
    SINGLE_FILE_NAME,
    read_weight_map,
    stored_bits_per_weight,
    stored_size,
)
from quantgate.core.errors import InputError
from quantgate.core.families import family_of_checkpoint
from quantgate.core.manifest import load_manifest

DTYPE_BITS = {
    "BF16": 16,
    "F16": 16,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "I32": 32,
    "I8": 8,
    "U8": 8,
    "F8_E4M3": 8,
}
QUANTIZED_MARKERS = ("weight_packed", "weight_scale")  # a module with these is stored quantized


@dataclass
class GroupSummary:
    modules: set[str] = field(default_factory=set)
    quantized: set[str] = field(default_factory=set)
    stored_bits: int = 0  # bits of every tensor of the group's modules


def _tensor_headers(directory: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    headers = {}
    single_file = not (directory / INDEX_NAME).exists() and (directory / SINGLE_FILE_NAME).is_file()
    shards = [SINGLE_FILE_NAME] if single_file else sorted(set(read_weight_map(directory).values()))
    for shard in shards:
        with safe_open(directory / shard, framework="pt") as handle:
            for name in handle.keys():
                tensor_slice = handle.get_slice(name)
                headers[name] = (tuple(tensor_slice.get_shape()), tensor_slice.get_dtype())
    return headers


def summarise(directory: Path) -> str:
    manifest = load_manifest(directory) if (directory / MANIFEST_NAME).is_file() else None
    config = json.loads((directory / CONFIG_NAME).read_text()).get("quantization_config")
    if config is None:
        raise InputError(f"{directory / CONFIG_NAME}: no quantization_config")
    if config.get("quant_method") != "compressed-tensors":
        raise InputError(f"{directory / CONFIG_NAME}: quantization_config is {config.get('quant_method')!r}, "
                         "not compressed-tensors")  # fmt: skip
    weights = next(iter(config["config_groups"].values()))["weights"]
    how = f"{weights['type']}{weights['num_bits']} {weights['strategy']}"
    if weights.get("group_size"):
        how += f" {weights['group_size']}"
    if weights.get("block_structure"):
        how += " {}x{}".format(*weights["block_structure"])
    how += " sym" if weights["symmetric"] else " asym"

    family = family_of_checkpoint(directory)
    groups: dict[str, GroupSummary] = defaultdict(GroupSummary)
    for name, (shape, dtype) in _tensor_headers(directory).items():
        module, _, local = name.rpartition(".")
        summary = groups[family.group_of(module) or "other"]
        summary.modules.add(module)
        if local in QUANTIZED_MARKERS:
            summary.quantized.add(module)
        elements = 1
        for dim in shape:
            elements *= dim
        summary.stored_bits += elements * DTYPE_BITS.get(dtype, 16)

    if manifest is not None:
        bpw = manifest.bits_per_weight
        lines = [
            f"checkpoint  {directory}",
            f"scheme      {manifest.scheme.name} ({config['format']}, weights {how}), method {manifest.method}",
            f"source      {manifest.source.name} (index sha256 {manifest.source.index_sha256[:12]})",
            f"size        {manifest.total_bytes:,} bytes, {manifest.total_bytes / manifest.source_bytes:.3f}"
            " x the BF16 shards",
            f"bits/weight {bpw.quantized:.3f} on quantized weights, {bpw.overall:.3f} overall",
        ]
    else:
        size, _ = stored_size(directory)
        quantized, overall = stored_bits_per_weight(directory)
        lines = [
            f"checkpoint  {directory}",
            f"scheme      made elsewhere ({config['format']}, weights {how}); no {MANIFEST_NAME}",
            f"size        {size:,} bytes in safetensors shards",
            f"bits/weight {quantized or 0:.3f} on quantized weights, {overall:.3f} overall (from the shards)",
        ]
    lines += ["", f"{'group':<16}{'quantized':>12}  how"]
    for group in sorted(groups):
        summary = groups[group]
        count = f"{len(summary.quantized)}/{len(summary.modules)}"
        lines.append(f"{group:<16}{count:>12}  {how if summary.quantized else 'bf16 (kept)'}")
    return "\n".join(lines)
