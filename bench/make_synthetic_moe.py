"""Write a synthetic BF16 checkpoint with DeepSeek-V3 / Kimi K2's layout and tensor names.

The checkpoint is what `quantgate quantize` and llm-compressor's `model_free_ptq` read from a real
Kimi K2 release, at a size chosen on the command line: config.json (DeepseekV3ForCausalLM),
model.safetensors.index.json and `model-0000i-of-0000n.safetensors` shards of about --shard-gb,
with per-expert tensor names (`model.layers.L.mlp.experts.E.gate_proj.weight`), MLA attention,
one shared expert, a router with a float32 `e_score_correction_bias`, a dense first layer and
untied embeddings. The number of routed experts is solved for to reach --size-gb. Every
quantizable in_features is a multiple of 128.

Values are seeded per tensor name (normal, std 1/sqrt(in_features)), so a tensor's bytes do not
depend on the shard size. Shards are streamed tensor by tensor: one tensor is held at a time.

`--fp8` writes the DeepSeek-V3 / Kimi K2 release layout instead: every decoder-layer Linear
(`*_proj.weight`: attention, dense MLP, routed and shared experts) as float8_e4m3fn with its
`weight_scale_inv` (float32, one per 128x128 block) right after it in the same shard, made from
the same BF16 values by quantgate.core.fp8.quantize_fp8 (DeepSeek's weight_quant); the config
carries the fp8 quantization_config; --size-gb is then the FP8 checkpoint's size.

Usage: python bench/make_synthetic_moe.py OUT_DIR --size-gb 4.2 [--shard-gb 1] [--seed 0] [--fp8] [--layers 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

GB = 10**9
INDEX_NAME = "model.safetensors.index.json"
TOKENIZER_SOURCE = Path(__file__).resolve().parent.parent / "models" / "kimi-k2-tiny"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
SAFETENSORS_DTYPES = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float8_e4m3fn: "F8_E4M3"}
FP8_BLOCK = (128, 128)
FP8_LINEAR = re.compile(r"^model\.layers\.\d+\..*_proj(_with_mqa)?\.weight$")  # as tinyk2.make_fp8
FP8_CONFIG = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}
SCALE_SUFFIX = "_scale_inv"


@dataclass(frozen=True)
class Dims:
    """DeepSeek-V3 dimensions; n_routed_experts is solved for the requested size."""

    hidden_size: int
    intermediate_size: int  # dense MLP of the first layer
    moe_intermediate_size: int
    num_hidden_layers: int  # the first is dense, the rest MoE
    num_attention_heads: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    vocab_size: int
    n_shared_experts: int = 1
    first_k_dense_replace: int = 1


# Plain tables: the large one for benchmark sizes (expert weights of 2M elements, 4 MB in BF16),
# the small one for tests and quick runs.
LARGE = Dims(2048, 6144, 1024, 8, 16, 768, 512, 128, 64, 128, 32768)
SMALL = Dims(256, 512, 128, 3, 4, 128, 128, 32, 64, 32, 2048)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.bfloat16

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


def dims_for_size(size_gb: float) -> Dims:
    return LARGE if size_gb >= 1 else SMALL


def _layer_tensors(d: Dims, layer: int, n_experts: int) -> list[TensorSpec]:
    p = f"model.layers.{layer}"
    H = d.hidden_size
    q_head = d.qk_nope_head_dim + d.qk_rope_head_dim
    specs = [
        TensorSpec(f"{p}.input_layernorm.weight", (H,)),
        TensorSpec(f"{p}.post_attention_layernorm.weight", (H,)),
        TensorSpec(f"{p}.self_attn.q_a_proj.weight", (d.q_lora_rank, H)),
        TensorSpec(f"{p}.self_attn.q_a_layernorm.weight", (d.q_lora_rank,)),
        TensorSpec(f"{p}.self_attn.q_b_proj.weight", (d.num_attention_heads * q_head, d.q_lora_rank)),
        TensorSpec(f"{p}.self_attn.kv_a_proj_with_mqa.weight", (d.kv_lora_rank + d.qk_rope_head_dim, H)),
        TensorSpec(f"{p}.self_attn.kv_a_layernorm.weight", (d.kv_lora_rank,)),
        TensorSpec(
            f"{p}.self_attn.kv_b_proj.weight",
            (d.num_attention_heads * (d.qk_nope_head_dim + d.v_head_dim), d.kv_lora_rank),
        ),
        TensorSpec(f"{p}.self_attn.o_proj.weight", (H, d.num_attention_heads * d.v_head_dim)),
    ]
    if layer < d.first_k_dense_replace:
        I = d.intermediate_size  # noqa: E741
        return specs + _mlp(f"{p}.mlp", H, I)
    shared_I = d.moe_intermediate_size * d.n_shared_experts
    specs += [
        TensorSpec(f"{p}.mlp.gate.weight", (n_experts, H)),
        TensorSpec(f"{p}.mlp.gate.e_score_correction_bias", (n_experts,), torch.float32),
    ]
    for expert in range(n_experts):
        specs += _mlp(f"{p}.mlp.experts.{expert}", H, d.moe_intermediate_size)
    return specs + _mlp(f"{p}.mlp.shared_experts", H, shared_I)


def _mlp(prefix: str, H: int, I: int) -> list[TensorSpec]:  # noqa: E741
    return [
        TensorSpec(f"{prefix}.gate_proj.weight", (I, H)),
        TensorSpec(f"{prefix}.up_proj.weight", (I, H)),
        TensorSpec(f"{prefix}.down_proj.weight", (H, I)),
    ]


def tensor_specs(d: Dims, n_experts: int, fp8: bool = False) -> list[TensorSpec]:
    """Every tensor, in checkpoint order: embeddings, layers, final norm, lm_head (with `fp8`, each
    decoder-layer Linear in FP8 followed by its block scales)."""
    specs = [TensorSpec("model.embed_tokens.weight", (d.vocab_size, d.hidden_size))]
    for layer in range(d.num_hidden_layers):
        specs += _layer_tensors(d, layer, n_experts)
    specs += [
        TensorSpec("model.norm.weight", (d.hidden_size,)),
        TensorSpec("lm_head.weight", (d.vocab_size, d.hidden_size)),
    ]
    return [s for spec in specs for s in _fp8_specs(spec)] if fp8 else specs


def _fp8_specs(spec: TensorSpec) -> list[TensorSpec]:
    if not FP8_LINEAR.match(spec.name):
        return [spec]
    (rows, cols), (height, width) = spec.shape, FP8_BLOCK
    scale_shape = (math.ceil(rows / height), math.ceil(cols / width))
    return [TensorSpec(spec.name, spec.shape, torch.float8_e4m3fn),
            TensorSpec(spec.name + SCALE_SUFFIX, scale_shape, torch.float32)]  # fmt: skip


def solve_experts(d: Dims, size_gb: float, fp8: bool = False) -> int:
    """The fewest routed experts per layer whose checkpoint reaches size_gb (at least 2)."""
    fixed = sum(s.nbytes for s in tensor_specs(d, 0, fp8))
    per_expert = sum(s.nbytes for s in tensor_specs(d, 1, fp8)) - fixed  # its 3 weights and router row, per layer
    return max(2, math.ceil((size_gb * GB - fixed) / per_expert))


def config_json(d: Dims, n_experts: int) -> dict:
    """Kimi K2's config.json fields, at these dimensions."""
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": d.vocab_size,
        "hidden_size": d.hidden_size,
        "intermediate_size": d.intermediate_size,
        "moe_intermediate_size": d.moe_intermediate_size,
        "num_hidden_layers": d.num_hidden_layers,
        "first_k_dense_replace": d.first_k_dense_replace,
        "moe_layer_freq": 1,
        "num_attention_heads": d.num_attention_heads,
        "num_key_value_heads": d.num_attention_heads,
        "q_lora_rank": d.q_lora_rank,
        "kv_lora_rank": d.kv_lora_rank,
        "qk_nope_head_dim": d.qk_nope_head_dim,
        "qk_rope_head_dim": d.qk_rope_head_dim,
        "v_head_dim": d.v_head_dim,
        "n_routed_experts": n_experts,
        "num_experts_per_tok": min(8, n_experts),
        "n_shared_experts": d.n_shared_experts,
        "n_group": 1,
        "topk_group": 1,
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.827,
        "num_nextn_predict_layers": 0,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rope_theta": 50000.0,
        "rms_norm_eps": 1e-6,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }


def make_tensor(spec: TensorSpec, seed: int) -> torch.Tensor:
    """Deterministic values for one tensor: a function of (seed, name) only. An FP8 weight and its
    scales are the block quantization of the BF16 weight of that name."""
    if spec.dtype == torch.float8_e4m3fn or spec.name.endswith(SCALE_SUFFIX):
        from quantgate.core.fp8 import quantize_fp8

        name = spec.name.removesuffix(SCALE_SUFFIX)
        if _LAST_FP8.get("key") != (name, seed):  # the weight, then its scales: quantized once
            weight = make_tensor(TensorSpec(name, _WEIGHT_SHAPES[name]), seed)
            _LAST_FP8.update(key=(name, seed), value=quantize_fp8(weight, FP8_BLOCK))
        return _LAST_FP8["value"][1 if spec.name.endswith(SCALE_SUFFIX) else 0]
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(spec.name.encode()))
    if spec.name.endswith("e_score_correction_bias"):
        return (torch.randn(spec.shape, generator=generator) * 1e-3).to(spec.dtype)
    if len(spec.shape) == 1:  # norms
        return (1 + 0.05 * torch.randn(spec.shape, generator=generator)).to(spec.dtype)
    std = spec.shape[1] ** -0.5
    return torch.randn(spec.shape, generator=generator, dtype=spec.dtype).mul_(std)


def assign_shards(specs: list[TensorSpec], shard_bytes: int) -> list[list[TensorSpec]]:
    """Consecutive tensors, a new shard when the next tensor would pass shard_bytes."""
    shards: list[list[TensorSpec]] = [[]]
    filled = 0
    for spec in specs:
        if shards[-1] and filled + spec.nbytes > shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(spec)
        filled += spec.nbytes
    return shards


_WEIGHT_SHAPES: dict[str, tuple[int, ...]] = {}  # FP8 weight name -> shape, for its scales' make_tensor
_LAST_FP8: dict = {}  # the last FP8 weight's (name, seed) and (weight, scales)


def write_shard(path: Path, specs: list[TensorSpec], seed: int) -> None:
    """A safetensors file written tensor by tensor (header first, then the data in header order)."""
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in specs:
        dtype = SAFETENSORS_DTYPES[spec.dtype]
        header[spec.name] = {
            "dtype": dtype,
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the data to 8 bytes
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for spec in specs:
            tensor = make_tensor(spec, seed)
            handle.write(tensor.contiguous().view(torch.uint8).numpy().data)


def make_checkpoint(
    out: Path, size_gb: float, shard_gb: float = 1.0, seed: int = 0, fp8: bool = False, layers: int | None = None
) -> dict:
    """Write the checkpoint into `out` (created; must not hold one already); returns a summary.
    `layers`: decoder layers (the first dense) instead of the table's, more experts per layer for the size."""
    d = dims_for_size(size_gb)
    if layers is not None:
        d = dataclasses.replace(d, num_hidden_layers=layers)
    n_experts = solve_experts(d, size_gb, fp8)
    specs = tensor_specs(d, n_experts, fp8)
    _WEIGHT_SHAPES.update({s.name: s.shape for s in specs if s.dtype == torch.float8_e4m3fn})
    shards = assign_shards(specs, int(shard_gb * GB))
    out.mkdir(parents=True, exist_ok=True)
    if (out / INDEX_NAME).exists():
        raise FileExistsError(f"{out}: already holds a checkpoint")
    weight_map = {}
    for i, shard_specs in enumerate(shards, start=1):
        shard_name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_shard(out / shard_name, shard_specs, seed)
        weight_map.update({spec.name: shard_name for spec in shard_specs})
    total = sum(s.nbytes for s in specs)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    config = config_json(d, n_experts) | ({"quantization_config": FP8_CONFIG} if fp8 else {})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (TOKENIZER_SOURCE / name).is_file():
            shutil.copyfile(TOKENIZER_SOURCE / name, out / name)
    return {
        "path": str(out),
        "bytes": total,
        "shards": len(shards),
        "tensors": len(specs),
        "n_routed_experts": n_experts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to write (created)")
    parser.add_argument("--size-gb", type=float, required=True, help="checkpoint size in GB (10^9 bytes)")
    parser.add_argument("--shard-gb", type=float, default=1.0, help="shard size in GB (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fp8", action="store_true", help="DeepSeek/Kimi block-FP8 release layout")
    parser.add_argument("--layers", type=int, default=None, help="decoder layers, the first dense (default: 8)")
    args = parser.parse_args(argv)
    summary = make_checkpoint(args.out, args.size_gb, args.shard_gb, args.seed, args.fp8, args.layers)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
