"""Write a DeepseekV3ForCausalLM as real Kimi K2 / DeepSeek-V3 checkpoints are stored on disk.

transformers 5 fuses the routed experts in memory (`mlp.experts.gate_up_proj` [E, 2I, H],
`mlp.experts.down_proj` [E, H, I]); on disk every expert keeps its own tensors
(`mlp.experts.{e}.{gate,up,down}_proj.weight`). Weights are BF16 except the router's
`e_score_correction_bias`, which stays float32 as in DeepSeek-V3's release.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

_FUSED = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)$")


def per_expert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unfuse routed experts into one tensor per expert; other tensors pass through."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        fused = _FUSED.match(name)
        if fused is None:
            out[name] = tensor
            continue
        prefix, kind = fused.groups()
        for expert, weight in enumerate(tensor):
            if kind == "gate_up_proj":  # weight: [2I, H]; gate rows first
                gate, up = weight.chunk(2, dim=0)
                out[f"{prefix}.{expert}.gate_proj.weight"] = gate
                out[f"{prefix}.{expert}.up_proj.weight"] = up
            else:  # weight: [H, I]
                out[f"{prefix}.{expert}.down_proj.weight"] = weight
    return out


def _storage_dtype(name: str) -> torch.dtype:
    return torch.float32 if name.endswith("e_score_correction_bias") else torch.bfloat16


def _layer_of(name: str) -> int:
    found = re.match(r"model\.layers\.(\d+)\.", name)
    return int(found.group(1)) if found else -1


def write_sharded(state_dict: dict[str, torch.Tensor], out_dir: Path, num_shards: int) -> None:
    """Write `model-0000i-of-0000n.safetensors` split by decoder layer, plus the index."""
    tensors = {
        name: tensor.detach().to(_storage_dtype(name)).contiguous()
        for name, tensor in per_expert_state_dict(state_dict).items()
    }
    layers = sorted({_layer_of(name) for name in tensors})
    shard_of_layer = {layer: min(i * num_shards // len(layers), num_shards - 1) for i, layer in enumerate(layers)}
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(num_shards)]
    for name in sorted(tensors):
        shard = num_shards - 1 if name.startswith(("lm_head", "model.norm")) else shard_of_layer[_layer_of(name)]
        shards[shard][name] = tensors[name]
    weight_map: dict[str, str] = {}
    total_size = 0
    for index, shard in enumerate(shards):
        file_name = f"model-{index + 1:05d}-of-{num_shards:05d}.safetensors"
        save_file(shard, str(out_dir / file_name), metadata={"format": "pt"})
        for name, tensor in shard.items():
            weight_map[name] = file_name
            total_size += tensor.numel() * tensor.element_size()
    index_json = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    write_json(out_dir / "model.safetensors.index.json", index_json)


def write_json(path: Path, payload: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
