"""Dequantize a compressed-tensors checkpoint to a plain BF16 one, through compressed-tensors' own decompressors.

Why: vLLM CPU cannot serve pack-quantized MoE checkpoints with DeepSeek-V3 routing ("No WNA16 MoE
backend supports the deployment configuration"), so on CPU a variant is served as its dequantized BF16
weights. Its numbers are the variant's (the same weights the quantized kernel would use, up to the
kernel's arithmetic), but its latency is NOT the quantized kernel's: results say so.

Per quantized module (a tensor group `<module>.weight_packed|weight_scale|...`), the local state dict is
given to the compressor registered for its config group's format (`BaseCompressor.decompress`) with that
group's QuantizationScheme; the result's `weight` is stored in BF16. Every other tensor is copied as is;
shard layout and index mirror the source; `quantization_config` is dropped from config.json and
`quantgate.dequantized.json` records the source. Written to a temporary folder and renamed into place.

    python -m quant.dequantize SRC DST
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import torch
from compressed_tensors.compressors.base import BaseCompressor
from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme
from safetensors import safe_open
from safetensors.torch import save_file

from quantgate.core.checkpoint import read_weight_map, sha256_file
from quantgate.core.errors import InputError
from quantgate.core.manifest import DequantizedRecord, write_dequantized_record

INDEX = "model.safetensors.index.json"
QUANT_SUFFIXES = (
    "weight_packed",
    "weight_scale",
    "weight_shape",
    "weight_zero_point",
    "weight_global_scale",
    "weight_g_idx",
)


def _schemes(config: dict, source: Path) -> list[tuple[list[str], QuantizationScheme]]:
    raw = config.get("quantization_config")
    if not raw or raw.get("quant_method") != "compressed-tensors":
        raise InputError(f"{source}/config.json: quantization_config: not a compressed-tensors checkpoint")
    parsed = QuantizationConfig.model_validate(raw)
    out = []
    for group in parsed.config_groups.values():
        scheme = group.model_copy(update={"format": group.format or parsed.format})
        out.append((list(group.targets), scheme))
    return out


def _scheme_for(module: str, schemes: list[tuple[list[str], QuantizationScheme]]) -> QuantizationScheme:
    """The group whose regex target matches the module; else the group that targets 'Linear'."""
    for targets, scheme in schemes:
        if any(t.startswith("re:") and re.match(t[3:], module) for t in targets):
            return scheme
    for targets, scheme in schemes:
        if "Linear" in targets:
            return scheme
    raise InputError(f"{module}: quantized tensors match no config group of quantization_config")


def dequantize_checkpoint(source: Path, target: Path) -> Path:
    source, target = source.resolve(), target.resolve()
    if not (source / INDEX).is_file():
        raise InputError(f"{source}: no {INDEX}")
    if target.exists():
        raise InputError(f"{target}: already exists")
    config = json.loads((source / "config.json").read_text())
    schemes = _schemes(config, source)
    source_map = read_weight_map(source)  # shard names inside `source`, checked before anything is written
    tmp = target.parent / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weight_map: dict[str, str] = {}
    for shard in sorted(set(source_map.values())):
        with safe_open(source / shard, framework="pt") as handle:
            names = sorted(handle.keys())
            tensors = {name: handle.get_tensor(name) for name in names}
        out: dict[str, torch.Tensor] = {}
        modules = sorted({n.rsplit(".", 1)[0] for n in names if n.rsplit(".", 1)[1] in QUANT_SUFFIXES})
        for module in modules:
            local = {s: tensors.pop(f"{module}.{s}") for s in (*QUANT_SUFFIXES, "weight") if f"{module}.{s}" in tensors}
            scheme = _scheme_for(module, schemes)
            compressor = BaseCompressor.get_value_from_registry(scheme.format)
            out[f"{module}.weight"] = compressor.decompress(local, scheme)["weight"].to(torch.bfloat16).contiguous()
        out |= tensors
        save_file(out, tmp / shard, metadata={"format": "pt"})
        weight_map |= {name: shard for name in out}
    (tmp / INDEX).write_text(
        json.dumps({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n"
    )
    config.pop("quantization_config")
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for path in sorted(source.iterdir()):
        if (
            path.is_file()
            and not path.name.endswith(".safetensors")
            and path.name not in (INDEX, "config.json", "quantgate.json")
        ):
            shutil.copy2(path, tmp / path.name)
    write_dequantized_record(
        tmp, DequantizedRecord(dequantized_from=str(source), config_sha256=sha256_file(source / "config.json"))
    )
    tmp.rename(target)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m quant.dequantize SRC DST")
    try:
        print(dequantize_checkpoint(Path(sys.argv[1]), Path(sys.argv[2])))
    except InputError as error:
        sys.exit(f"dequantize: error: {error}")
