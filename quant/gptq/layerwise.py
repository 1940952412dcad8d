"""One decoder layer at a time: read its tensors from the shards, run it, expose its Linear inputs.

The layer is transformers' own `DeepseekV3DecoderLayer`, built from the checkpoint's config in
float32 and loaded from the safetensors shards (`safe_open`; nothing else of the model is read).
transformers 5 fuses the routed experts into 3-D parameters; here they are replaced by
`UnfusedExperts`, one `DeepseekV3MLP` (gate/up/down nn.Linear) per expert, so module names equal
the checkpoint's (`mlp.experts.E.gate_proj`) and `load_state_dict` is strict.

Calibration statistics: non-expert Linears are observed by forward pre-hooks; routed experts call
`observe(expert, projection, inputs)` with exactly the rows the router sent them (MoE-Quant), or,
with `calibrate_all=True`, with every token (llm-compressor's `calibrate_all_experts`) while the
layer's output stays the routed one (the routed output is computed on the routed rows only).

Shapes: S = samples, L = sample length, H = hidden size, N = S*L tokens, k = experts per token.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
    DeepseekV3DecoderLayer,
    DeepseekV3MLP,
    DeepseekV3RotaryEmbedding,
)

from quant.source import SourceCheckpoint
from quantgate.core.errors import InputError

# (expert, "gate_proj"|"up_proj"|"down_proj", inputs [n, in], routing weights [n] or None)
Observer = Callable[[int, str, torch.Tensor, torch.Tensor | None], None]
EMBED = "model.embed_tokens.weight"


def layer_prefix(index: int) -> str:
    return f"model.layers.{index}."


class UnfusedExperts(nn.ModuleList):
    """Routed experts as separate Linear modules; the same maths as transformers' fused loop."""

    def __init__(self, config) -> None:
        super().__init__(
            DeepseekV3MLP(config, intermediate_size=config.moe_intermediate_size)
            for _ in range(config.n_routed_experts)
        )
        self.num_experts = config.n_routed_experts
        self.observe: Observer | None = None
        self.calibrate_all = False
        # routed tokens seen while observing
        self.tokens = torch.zeros(self.num_experts, dtype=torch.int64, device="cpu")

    def _observe_all(self, expert: DeepseekV3MLP, index: int, hidden: torch.Tensor) -> None:
        self.observe(index, "gate_proj", hidden, None)
        self.observe(index, "up_proj", hidden, None)
        self.observe(index, "down_proj", expert.act_fn(expert.gate_proj(hidden)) * expert.up_proj(hidden), None)

    def forward(self, hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        # hidden: [N, H]; top_k_index, top_k_weights: [N, k]
        out = torch.zeros_like(hidden)
        for index, expert in enumerate(self):
            token_idx, slot = torch.where(top_k_index == index)  # rows routed to this expert, [n_e]
            if self.observe is not None:
                self.tokens[index] += token_idx.numel()
                if self.calibrate_all:
                    self._observe_all(expert, index, hidden)
            if token_idx.numel() == 0:
                continue
            routed = hidden[token_idx]  # [n_e, H]
            inner = expert.act_fn(expert.gate_proj(routed)) * expert.up_proj(routed)  # [n_e, I_moe]
            weights = top_k_weights[token_idx, slot]  # [n_e]
            if self.observe is not None and not self.calibrate_all:
                self.observe(index, "gate_proj", routed, weights)
                self.observe(index, "up_proj", routed, weights)
                self.observe(index, "down_proj", inner, weights)
            y = expert.down_proj(inner) * weights[:, None]  # [n_e, H]
            out.index_add_(0, token_idx, y.to(out.dtype))
        return out


class ShardReader:
    """Tensors by name from the source's shards, each shard memory-mapped when first needed."""

    def __init__(self, source: SourceCheckpoint) -> None:
        self.source = source
        self._handles: dict[str, object] = {}

    def get(self, name: str) -> torch.Tensor:
        shard = self.source.tensors[name].shard
        if shard not in self._handles:
            self._handles[shard] = safe_open(self.source.path / shard, framework="pt")
        tensor = self._handles[shard].get_tensor(name)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"{self.source.path / shard}: tensor {name} contains NaN or Inf")
        return tensor

    def layer_tensors(self, index: int) -> dict[str, torch.Tensor]:
        prefix = layer_prefix(index)
        return {n[len(prefix) :]: self.get(n) for n in sorted(self.source.tensors) if n.startswith(prefix)}


def load_config(model: Path):
    config = AutoConfig.from_pretrained(model)
    if config.model_type not in ("deepseek_v3", "kimi_k2"):
        raise InputError(f"{model / 'config.json'}: gptq supports DeepSeek-V3 / Kimi K2, not {config.model_type!r}")
    config._attn_implementation = "sdpa"  # causal without a mask tensor (calibration rows are unpadded)
    return config


def build_layer(config, index: int, tensors: dict[str, torch.Tensor]) -> DeepseekV3DecoderLayer:
    """transformers' decoder layer in float32 with unfused experts, loaded strictly from `tensors`."""
    with torch.device("meta"):
        layer = DeepseekV3DecoderLayer(config, index)
        if hasattr(layer.mlp, "experts"):
            layer.mlp.experts = UnfusedExperts(config)
    layer = layer.to_empty(device="cpu").float()
    state = {name: tensor.float() for name, tensor in tensors.items()}
    missing, unexpected = layer.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"layer {index}: checkpoint tensors do not fit DeepseekV3DecoderLayer "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    return layer.eval()


class LayerRunner:
    """Runs calibration hidden states [S, L, H] through one layer, in batches of rows."""

    def __init__(self, config, sample_length: int, batch_size: int = 8) -> None:
        self.batch_size = batch_size
        rotary = DeepseekV3RotaryEmbedding(config)
        positions = torch.arange(sample_length)[None]  # [1, L]
        probe = torch.zeros(1, sample_length, config.hidden_size)
        self.position_embeddings = rotary(probe, positions)  # cos, sin: [1, L, rope dim]
        self.positions = positions

    @torch.no_grad()
    def run(self, layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        outs = []
        for start in range(0, hidden.shape[0], self.batch_size):
            batch = hidden[start : start + self.batch_size]  # [b, L, H]
            outs.append(
                layer(batch, attention_mask=None, position_ids=self.positions,
                      position_embeddings=self.position_embeddings)
            )  # fmt: skip
        return torch.cat(outs)  # [S, L, H]


def embed(reader: ShardReader, ids: torch.Tensor) -> torch.Tensor:
    """The calibration rows' input embeddings, float32: [S, L] -> [S, L, H]."""
    return nn.functional.embedding(ids, reader.get(EMBED).float())
