"""One decoder layer at a time: read its tensors from the shards, run it, expose its Linear inputs.

The layer is transformers' own decoder layer of the checkpoint's family (`DeepseekV3DecoderLayer`,
`Qwen3MoeDecoderLayer`, `MixtralDecoderLayer`, `LlamaDecoderLayer`), built from its config in
float32 and loaded from the safetensors shards (`safe_open`; nothing else of the model is read).
transformers 5 fuses the routed experts into 3-D parameters; here they are replaced by
`UnfusedExperts`, one SwiGLU MLP (gate/up/down nn.Linear) per expert, so that each expert
Linear is a module of its own (`mlp.experts.E.gate_proj`). On-disk names that differ from
transformers' in-memory ones (Mixtral's `block_sparse_moe.experts.E.w1`) are mapped through the
family (`LayerNames`), and `load_state_dict` is strict.

Calibration statistics: non-expert Linears are observed by forward pre-hooks; routed experts call
`observe(expert, projection, inputs)` with exactly the rows the router sent them (MoE-Quant), or,
with `calibrate_all=True`, with every token (llm-compressor's `calibrate_all_experts`) while the
layer's output stays the routed one (the routed output is computed on the routed rows only).

Shapes: S = samples, L = sample length, H = hidden size, N = S*L tokens, k = experts per token.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig
from transformers.activations import ACT2FN

from quant.source import SourceCheckpoint
from quantgate.core.errors import InputError
from quantgate.core.families import Family, family_of_config
from quantgate.core.fp8 import dequantize_fp8

# (expert, "gate_proj"|"up_proj"|"down_proj", inputs [n, in], routing weights [n] or None)
Observer = Callable[[int, str, torch.Tensor, torch.Tensor | None], None]
EMBED = "model.embed_tokens.weight"


def layer_prefix(index: int) -> str:
    return f"model.layers.{index}."


@dataclass(frozen=True)
class LayerClasses:
    """transformers' classes for one family, and the config fields that size its routed experts."""

    module: str  # transformers.models.<module>.modeling_<module>
    prefix: str  # class name prefix
    num_experts: str | None = None  # config field: routed experts per MoE layer
    expert_size: str | None = None  # config field: an expert's intermediate size

    def get(self, kind: str) -> type:
        modeling = importlib.import_module(f"transformers.models.{self.module}.modeling_{self.module}")
        return getattr(modeling, f"{self.prefix}{kind}")


LAYER_CLASSES: dict[str, LayerClasses] = {
    "deepseek_v3": LayerClasses("deepseek_v3", "DeepseekV3", "n_routed_experts", "moe_intermediate_size"),
    "qwen3_moe": LayerClasses("qwen3_moe", "Qwen3Moe", "num_experts", "moe_intermediate_size"),
    "mixtral": LayerClasses("mixtral", "Mixtral", "num_local_experts", "intermediate_size"),
    "llama": LayerClasses("llama", "Llama"),
}


class ExpertMLP(nn.Module):
    """One routed expert as transformers computes it: down(act(gate(x)) * up(x))."""

    def __init__(self, config, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class UnfusedExperts(nn.ModuleList):
    """Routed experts as separate Linear modules; the same maths as transformers' fused loop."""

    def __init__(self, config, classes: LayerClasses) -> None:
        num_experts = getattr(config, classes.num_experts)
        size = getattr(config, classes.expert_size)
        super().__init__(ExpertMLP(config, size) for _ in range(num_experts))
        self.num_experts = num_experts
        self.observe: Observer | None = None
        self.calibrate_all = False
        # routed tokens seen while observing
        self.tokens = torch.zeros(self.num_experts, dtype=torch.int64, device="cpu")

    def _observe_all(self, expert: ExpertMLP, index: int, hidden: torch.Tensor) -> None:
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
    """Tensors by name from the source's shards, each shard memory-mapped when first needed; a block-FP8
    source's FP8 weights come dequantized to BF16 (quantgate.core.fp8), their scales checked finite."""

    def __init__(self, source: SourceCheckpoint) -> None:
        self.source = source
        self._handles: dict[str, object] = {}

    def _read(self, shard: str, name: str) -> torch.Tensor:
        if shard not in self._handles:
            self._handles[shard] = safe_open(self.source.path / shard, framework="pt")
        tensor = self._handles[shard].get_tensor(name)
        values = tensor.float() if tensor.element_size() == 1 else tensor  # isfinite has no float8 kernel
        if tensor.is_floating_point() and not bool(torch.isfinite(values).all()):
            raise InputError(f"{self.source.path / shard}: tensor {name} contains NaN or Inf")
        return tensor

    def get(self, name: str) -> torch.Tensor:
        tensor = self._read(self.source.tensors[name].shard, name)
        if self.source.is_fp8(name):
            scale = self.source.scales[name]
            block = self.source.fp8.weight_block_size
            tensor = dequantize_fp8(tensor, self._read(scale.shard, scale.name), block).to(torch.bfloat16)
        return tensor

    def layer_tensors(self, index: int) -> dict[str, torch.Tensor]:
        prefix = layer_prefix(index)
        return {n[len(prefix) :]: self.get(n) for n in sorted(self.source.tensors) if n.startswith(prefix)}


@dataclass(frozen=True)
class LayerNames:
    """Layer-local module names: on disk (the checkpoint's) <-> in the built layer (transformers')."""

    family: Family

    def in_memory(self, module: str) -> str:
        """`block_sparse_moe.experts.3.w1` -> `mlp.experts.3.gate_proj`; other names are unchanged."""
        expert = self.family.expert_of(module)
        if expert is not None:
            _, index, role = expert
            return f"{self.family.moe_block}.experts.{index}.{role}"
        if self.family.group_of(module) == "router":
            return f"{self.family.moe_block}.gate"
        return module

    def tensor_in_memory(self, tensor: str) -> str:
        module, _, local = tensor.rpartition(".")
        return f"{self.in_memory(module)}.{local}"


def load_config(model: Path):
    config = AutoConfig.from_pretrained(model)
    family_of_config(config.to_dict(), model / "config.json")
    config._attn_implementation = "sdpa"  # causal without a mask tensor (calibration rows are unpadded)
    return config


def build_layer(config, family: Family, index: int, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """transformers' decoder layer in float32 with unfused experts, loaded strictly from `tensors`
    (layer-local on-disk names)."""
    classes = LAYER_CLASSES[family.name]
    decoder_layer = classes.get("DecoderLayer")
    with torch.device("meta"):
        layer = decoder_layer(config, index)
        if hasattr(layer.mlp, "experts"):
            layer.mlp.experts = UnfusedExperts(config, classes)
    layer = layer.to_empty(device="cpu").float()
    names = LayerNames(family)
    state = {names.tensor_in_memory(name): tensor.float() for name, tensor in tensors.items()}
    missing, unexpected = layer.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"layer {index}: checkpoint tensors do not fit {decoder_layer.__name__} "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    return layer.eval()


class LayerRunner:
    """Runs calibration hidden states [S, L, H] through one layer, in batches of rows."""

    def __init__(self, config, family: Family, sample_length: int, batch_size: int = 8) -> None:
        self.batch_size = batch_size
        rotary = LAYER_CLASSES[family.name].get("RotaryEmbedding")(config)
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
