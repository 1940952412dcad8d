"""One decoder layer at a time: read its tensors from the shards, run it, expose its Linear inputs.

The layer is transformers' own decoder layer of the checkpoint's family (`DeepseekV3DecoderLayer`,
`Qwen3MoeDecoderLayer`, `MixtralDecoderLayer`, `LlamaDecoderLayer`), built from its config in
float32 and loaded from the safetensors shards (each tensor read by its offset; nothing else of the
model is read). transformers 5 fuses the routed experts into 3-D parameters; here they are replaced by
`UnfusedExperts`, one SwiGLU MLP (gate/up/down Linear) per expert, so that each expert
Linear is a module of its own (`mlp.experts.E.gate_proj`). The experts' weights keep the checkpoint's
dtype (computed in float32: the same values) and can be read one expert at a time when needed
(`build_layer(..., reader)`, `UnfusedExperts.load`). On-disk names that differ from
transformers' in-memory ones (Mixtral's `block_sparse_moe.experts.E.w1`) are mapped through the
family (`LayerNames`), and loading is strict.

Calibration statistics: non-expert Linears are observed by forward pre-hooks; the routed experts
record their inputs during that forward (`recording`) and `UnfusedExperts.calibrate` then gives one
expert's Linear inputs: exactly the rows the router sent it (MoE-Quant), or, with `calibrate_all=True`,
every token (llm-compressor's `calibrate_all_experts`), in the order of the forward's batches.

Shapes: S = samples, L = sample length, H = hidden size, N = S*L tokens, k = experts per token.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig
from transformers.activations import ACT2FN

from quant.kernels import all_finite
from quant.select import module_of
from quant.source import SourceCheckpoint
from quant.stream import Entry, read_header
from quantgate.core.errors import InputError
from quantgate.core.families import Family, family_of_config
from quantgate.core.fp8 import dequantize_fp8

# (expert, "gate_proj"|"up_proj"|"down_proj", inputs [n, in], routing weights [n] or None)
Observer = Callable[[int, str, torch.Tensor, torch.Tensor | None], None]
EMBED = "model.embed_tokens.weight"
EXPERTS = "mlp.experts."  # the routed experts' in-memory prefix (every family's MoE block is `mlp`)


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


class SourceLinear(nn.Linear):
    """A Linear whose weight stays in the checkpoint's dtype (BF16: half of a float32 copy) and is computed in
    the input's dtype (float32): exactly what an upcast float32 copy of the weight computes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight.to(x.dtype), self.bias)


class ExpertMLP(nn.Module):
    """One routed expert as transformers computes it: down(act(gate(x)) * up(x))."""

    def __init__(self, config, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = SourceLinear(config.hidden_size, intermediate_size, bias=False)
        self.up_proj = SourceLinear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = SourceLinear(intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def inner(self, x: torch.Tensor) -> torch.Tensor:
        """down_proj's input: act(gate(x)) * up(x), [n, I_moe]."""
        return self.act_fn(self.gate_proj(x)) * self.up_proj(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.inner(x))


PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


class UnfusedExperts(nn.ModuleList):
    """Routed experts as separate Linear modules; the same maths as transformers' fused loop.

    Weights stay in the checkpoint's dtype and may be left unread (on the meta device) until
    `load(expert)` reads them through `read` (set by `build_layer`), so that a layer's experts
    need not all be in memory in their source form at once. While `recording` is a list, a
    forward records its inputs (the MoE block's input rows and the router's choice) instead of
    computing the experts, and counts each expert's routed tokens; `calibrate` then gives one
    expert's Linear inputs over the recorded calls, as its forward sees them."""

    def __init__(self, config, classes: LayerClasses) -> None:
        num_experts = getattr(config, classes.num_experts)
        size = getattr(config, classes.expert_size)
        super().__init__(ExpertMLP(config, size) for _ in range(num_experts))
        self.num_experts = num_experts
        self.read: Callable[[int, str], torch.Tensor] | None = None  # (expert, projection) -> weight
        # (hidden [N, H], top_k_index [N, k], top_k_weights [N, k]) per forward call, or None: compute
        self.recording: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self.tokens = torch.zeros(self.num_experts, dtype=torch.int64, device="cpu")  # routed tokens recorded

    def weight(self, expert: int, projection: str) -> torch.Tensor:
        return getattr(self[expert], projection).weight

    def set_weight(self, expert: int, projection: str, weight: torch.Tensor) -> None:
        getattr(self[expert], projection).weight = nn.Parameter(weight, requires_grad=False)

    def load(self, expert: int) -> None:
        """Read the expert's weights that are not in memory yet (from the checkpoint, as they are there)."""
        for projection in PROJECTIONS:
            if self.weight(expert, projection).is_meta:
                self.set_weight(expert, projection, self.read(expert, projection))

    def forward(self, hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        # hidden: [N, H]; top_k_index, top_k_weights: [N, k]
        if self.recording is not None:  # the output is not used: only the experts' inputs are wanted
            self.recording.append((hidden, top_k_index, top_k_weights))
            self.tokens += torch.bincount(top_k_index.reshape(-1), minlength=self.num_experts)
            return torch.zeros_like(hidden)
        out = torch.zeros_like(hidden)
        for index, expert in enumerate(self):
            token_idx, slot = torch.where(top_k_index == index)  # rows routed to this expert, [n_e]
            if token_idx.numel() == 0:
                continue
            inner = expert.inner(hidden[token_idx])  # [n_e, I_moe]
            y = expert.down_proj(inner) * top_k_weights[token_idx, slot][:, None]  # [n_e, H]
            out.index_add_(0, token_idx, y.to(out.dtype))
        return out

    @torch.no_grad()
    def calibrate(self, index: int, observe: Observer, calibrate_all: bool = False, inner: bool = True) -> None:
        """Expert `index`'s Linear inputs over the recorded calls, in their order, to `observe`: the rows the
        router sent it with their routing weights (MoE-Quant), or every row (`calibrate_all`, llm-compressor's
        calibrate_all_experts). `inner=False` leaves out down_proj's input (which costs gate and up)."""
        expert = self[index]
        for hidden, top_k_index, top_k_weights in self.recording or ():
            if calibrate_all:
                rows, weights = hidden, None
            else:
                token_idx, slot = torch.where(top_k_index == index)  # rows routed to this expert, [n_e]
                if token_idx.numel() == 0:
                    continue
                rows, weights = hidden[token_idx], top_k_weights[token_idx, slot]  # [n_e, H], [n_e]
            observe(index, "gate_proj", rows, weights)
            observe(index, "up_proj", rows, weights)
            if inner:
                observe(index, "down_proj", expert.inner(rows), weights)


def read_tensor(path: Path, entry: Entry) -> torch.Tensor:
    """One tensor of a safetensors file, read by its offset into memory of its own."""
    tensor = torch.empty(entry.shape, dtype=entry.dtype)
    if entry.nbytes:
        buffer = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
        with path.open("rb", buffering=0) as handle:
            done = 0
            while done < entry.nbytes:
                handle.seek(entry.start + done)
                read = handle.readinto(buffer[done:])
                if not read:
                    raise InputError(f"{path}: tensor {entry.name} is cut short")
                done += read
    return tensor


class ShardReader:
    """Tensors by name from the source's shards, each read by offset into memory of its own (no mapping
    of the shard: a tensor's memory is freed with it, and the page cache is not the process's); a
    block-FP8 source's FP8 weights come dequantized to BF16 (quantgate.core.fp8), their scales checked finite."""

    def __init__(self, source: SourceCheckpoint) -> None:
        self.source = source
        self._entries: dict[str, dict[str, Entry]] = {}

    def _read(self, shard: str, name: str) -> torch.Tensor:
        path = self.source.path / shard
        if shard not in self._entries:
            self._entries[shard] = {entry.name: entry for entry in read_header(path)[1]}
        tensor = read_tensor(path, self._entries[shard][name])
        if not all_finite(tensor):
            raise InputError(f"{path}: tensor {name} contains NaN or Inf")
        return tensor

    def get(self, name: str) -> torch.Tensor:
        tensor = self._read(self.source.tensors[name].shard, name)
        if self.source.is_fp8(name):
            scale = self.source.scales[name]
            block = self.source.fp8.weight_block_size
            tensor = dequantize_fp8(tensor, self._read(scale.shard, scale.name), block).to(torch.bfloat16)
        return tensor

    def layer_names(self, index: int) -> list[str]:
        """The layer's tensors, full on-disk names, sorted."""
        prefix = layer_prefix(index)
        return [n for n in sorted(self.source.tensors) if n.startswith(prefix)]

    def layer_tensors(self, index: int, experts: bool = True) -> dict[str, torch.Tensor]:
        """The layer's tensors by layer-local on-disk name; `experts=False` leaves the routed experts' out."""
        prefix, family = layer_prefix(index), self.source.family
        names = self.layer_names(index)
        if not experts:
            names = [n for n in names if family.expert_of(module_of(n)[len(prefix) :]) is None]
        return {n[len(prefix) :]: self.get(n) for n in names}


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


def build_layer(
    config, family: Family, index: int, tensors: dict[str, torch.Tensor], reader: ShardReader | None = None
) -> nn.Module:
    """transformers' decoder layer with unfused experts, loaded strictly from `tensors` (layer-local on-disk
    names): float32, except the routed experts' weights, which keep the checkpoint's dtype. With `reader`,
    the routed experts' weights missing from `tensors` are left unread, for `UnfusedExperts.load`."""
    classes = LAYER_CLASSES[family.name]
    decoder_layer = classes.get("DecoderLayer")
    with torch.device("meta"):
        layer = decoder_layer(config, index)
        experts = UnfusedExperts(config, classes) if hasattr(layer.mlp, "experts") else None
        if experts is not None:
            layer.mlp.experts = nn.Module()  # the experts stay on meta while the rest is materialized
    layer = layer.to_empty(device="cpu").float()
    names = LayerNames(family)
    state = {names.tensor_in_memory(name): tensor for name, tensor in tensors.items()}
    unexpected = []
    if experts is not None:
        layer.mlp.experts = experts
        on_disk = {}  # (expert, projection) -> full on-disk weight name
        prefix = layer_prefix(index)
        for name in reader.layer_names(index) if reader is not None else ():
            expert = family.expert_of(module_of(name)[len(prefix) :])
            if expert is not None and name.endswith(".weight"):
                on_disk[expert[1:]] = name
        for key in [k for k in state if k.startswith(EXPERTS)]:
            expert, projection, local = key[len(EXPERTS) :].split(".")
            if int(expert) >= experts.num_experts or projection not in PROJECTIONS or local != "weight":
                unexpected.append(key)
                continue
            experts.set_weight(int(expert), projection, state.pop(key))
        missing = [
            f"{EXPERTS}{e}.{p}.weight" for e in range(experts.num_experts) for p in PROJECTIONS
            if experts.weight(e, p).is_meta and (e, p) not in on_disk
        ]  # fmt: skip
        experts.read = lambda e, p: reader.get(on_disk[(e, p)])
    else:
        missing = []
    result = layer.load_state_dict(state, strict=False)  # copied into the float32 parameters
    missing, unexpected = [*missing, *(k for k in result.missing_keys if not k.startswith(EXPERTS))], [
        *unexpected, *result.unexpected_keys
    ]
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
    return nn.functional.embedding(ids, reader.get(EMBED)).float()  # rows upcast: the same values
