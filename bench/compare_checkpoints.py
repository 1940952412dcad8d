"""Compare two safetensors checkpoints tensor by tensor: same names, dtypes, shapes and bytes.

Tensors are read one pair at a time, so memory stays at two tensors. Equality is bitwise (the
bytes), so float8 and -0.0/NaN payloads compare exactly. Names are compared as written: a tool
that names its tensors differently shows up as names only in one checkpoint, never as a match.
The `quantization_config` blocks of the two config.json files are compared key by key too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

INDEX_NAME = "model.safetensors.index.json"


@dataclass
class Comparison:
    tensors_compared: int = 0
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    mismatched: dict[str, str] = field(default_factory=dict)  # tensor name -> what differs
    config_differences: dict[str, tuple] = field(default_factory=dict)  # flattened key -> (a, b)

    @property
    def tensors_equal(self) -> bool:
        """Every tensor present in both, with equal dtype, shape and bytes (configs aside)."""
        return not (self.only_in_a or self.only_in_b or self.mismatched)

    def as_dict(self) -> dict:
        return asdict(self) | {"tensors_equal": self.tensors_equal}

    def summary(self, limit: int = 5) -> str:
        if self.tensors_equal:
            return f"bit-equal ({self.tensors_compared} tensors)"
        parts = []
        for label, names in (
            ("only in A", self.only_in_a),
            ("only in B", self.only_in_b),
            ("differ", list(self.mismatched)),
        ):
            if names:
                shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
                parts.append(f"{len(names)} {label}: {shown}")
        return "; ".join(parts)


def tensor_locations(checkpoint: Path) -> dict[str, Path]:
    """Tensor name -> shard file, from the index or, without one, from every *.safetensors."""
    index = checkpoint / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: checkpoint / shard for name, shard in weight_map.items()}
    locations = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(shard, framework="pt") as handle:
            locations.update({name: shard for name in handle.keys()})
    return locations


_SAME_WIDTH_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def tensor_difference(a: torch.Tensor, b: torch.Tensor) -> str | None:
    """What differs between two tensors, or None when dtype, shape and every byte agree."""
    if a.dtype != b.dtype:
        return f"dtype {a.dtype} != {b.dtype}"
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    as_int = _SAME_WIDTH_INT[a.element_size()]  # compare bit patterns, not values
    a_bits, b_bits = a.contiguous().view(as_int), b.contiguous().view(as_int)
    if torch.equal(a_bits, b_bits):
        return None
    differing = int(a_bits.ne(b_bits).sum())
    detail = ""
    if a.is_floating_point():
        detail = f", max abs difference {(a.double() - b.double()).abs().max().item():.3g}"
    return f"{differing} of {a.numel()} elements differ{detail}"


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def config_differences(a: Path, b: Path) -> dict[str, tuple]:
    """Flattened quantization_config keys whose values differ between two checkpoints' config.json."""
    configs = []
    for checkpoint in (a, b):
        path = checkpoint / "config.json"
        config = json.loads(path.read_text()) if path.is_file() else {}
        quantization = dict(config.get("quantization_config", {}))
        # group names are the writer's choice ("group_0", "config_group_0"): compare groups in order
        groups = quantization.pop("config_groups", {})
        quantization["config_groups"] = {str(i): groups[name] for i, name in enumerate(sorted(groups))}
        configs.append(_flatten(quantization))
    keys = sorted(configs[0].keys() | configs[1].keys())
    return {k: (configs[0].get(k), configs[1].get(k)) for k in keys if configs[0].get(k) != configs[1].get(k)}


def compare_checkpoints(a: Path, b: Path) -> Comparison:
    where_a, where_b = tensor_locations(a), tensor_locations(b)
    result = Comparison(
        only_in_a=sorted(where_a.keys() - where_b.keys()),
        only_in_b=sorted(where_b.keys() - where_a.keys()),
        config_differences=config_differences(a, b),
    )
    common = sorted(where_a.keys() & where_b.keys(), key=lambda n: (str(where_a[n]), n))
    handles: dict[Path, object] = {}
    try:
        for name in common:
            for path in (where_a[name], where_b[name]):
                if path not in handles:
                    handles[path] = safe_open(path, framework="pt").__enter__()
            difference = tensor_difference(
                handles[where_a[name]].get_tensor(name), handles[where_b[name]].get_tensor(name)
            )
            if difference is not None:
                result.mismatched[name] = difference
            result.tensors_compared += 1
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)
    return result
