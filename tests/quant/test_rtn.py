"""RTN output equals compressed-tensors' own model-path compression, bit for bit; zero-group convention."""

from __future__ import annotations

import json

import pytest
import torch
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import (
    QuantizationStatus,
    QuantizationStrategy,
    apply_quantization_config,
)
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam
from safetensors import safe_open
from torch import nn

from quant.rtn import compress_weight
from quant.schemes import get_scheme, scheme_names
from quantgate.core.families import EMBEDDINGS, ROUTER, matches

BF16_EPS = 2.0**-7
# The reference rebuilds modules one by one; layers 0-1 hold every MoE group (dense MLP, attention,
# routed and shared experts, router) and keep the suite short. Other tensors are checked in test_build.
REFERENCE_PREFIXES = ("model.layers.0.", "model.layers.1.", "model.embed_tokens.", "lm_head.", "model.norm.")


class Holder(nn.Module):
    """Stands in for modules that are not nn.Linear (router, embeddings, norms): tensors only."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for local, tensor in tensors.items():
            self.register_parameter(local, nn.Parameter(tensor, requires_grad=False))


def reference_min_max(weight: torch.Tensor, args) -> tuple[torch.Tensor, torch.Tensor]:
    """An observer written independently of quant.rtn (explicit reshapes, no padding helper)."""
    out_features, in_features = weight.shape
    if args.strategy == QuantizationStrategy.CHANNEL:
        return weight.min(dim=1, keepdim=True).values, weight.max(dim=1, keepdim=True).values
    if args.strategy in (QuantizationStrategy.GROUP, QuantizationStrategy.TENSOR_GROUP):
        grouped = weight.reshape(out_features, in_features // args.group_size, args.group_size)
        return grouped.min(dim=2).values, grouped.max(dim=2).values
    rows, cols = args.block_structure
    n_rows = -(-out_features // rows)
    mins = torch.empty(n_rows, in_features // cols, dtype=weight.dtype)
    maxs = torch.empty_like(mins)
    for r in range(n_rows):
        for c in range(in_features // cols):
            block = weight[r * rows : (r + 1) * rows, c * cols : (c + 1) * cols]
            mins[r, c], maxs[r, c] = block.min(), block.max()
    return mins, maxs


def reference_compression(source_dir, scheme) -> dict[str, torch.Tensor]:
    """compressed-tensors' model path: apply_quantization_config, qparams, ModelCompressor.compress_model."""
    index = json.loads((source_dir / "model.safetensors.index.json").read_text())
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for name, shard in sorted(index["weight_map"].items()):
        if not name.startswith(REFERENCE_PREFIXES):
            continue
        with safe_open(source_dir / shard, framework="pt") as handle:
            module_name, _, local = name.rpartition(".")
            by_module.setdefault(module_name, {})[local] = handle.get_tensor(name)
    model = nn.Module()
    for module_name, tensors in by_module.items():
        weight = tensors.get("weight")
        is_linear = set(tensors) == {"weight"} and weight.ndim == 2
        if is_linear and not any(matches(p, module_name) for p in (ROUTER, EMBEDDINGS)):
            module = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
            module.weight.data = weight
        else:
            module = Holder(tensors)
        parent = model
        for part in module_name.split(".")[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(module_name.split(".")[-1], module)

    config = scheme.quantization_config()
    config.quantization_status = QuantizationStatus.FROZEN
    apply_quantization_config(model, config)
    args = scheme.quantization.weights
    for module in model.modules():
        if getattr(module, "quantization_scheme", None) is None:
            continue
        global_scale = None
        if args.strategy == QuantizationStrategy.TENSOR_GROUP:
            global_scale = generate_gparam(module.weight.min(), module.weight.max())
            module.weight_global_scale.data.copy_(global_scale)
        scale, _ = calculate_qparams(*reference_min_max(module.weight.data, args), args, global_scale)
        module.weight_scale.data.copy_(scale)
    ModelCompressor(quantization_config=config).compress_model(model)
    return model.state_dict()


@pytest.mark.parametrize("name", scheme_names())
def test_output_equals_compressed_tensors_model_path(name, built, model_copy) -> None:
    outcome = built(name)
    expected = reference_compression(model_copy, get_scheme(name))
    index = json.loads((outcome.path / "model.safetensors.index.json").read_text())
    covered = {n: s for n, s in index["weight_map"].items() if n.startswith(REFERENCE_PREFIXES)}
    assert set(covered) == set(expected)
    for tensor_name, shard in covered.items():
        with safe_open(outcome.path / shard, framework="pt") as handle:
            got = handle.get_tensor(tensor_name)
        want = expected[tensor_name]
        assert got.dtype == want.dtype and got.shape == want.shape, tensor_name
        assert torch.equal(got.view(torch.uint8), want.contiguous().view(torch.uint8)), tensor_name


def test_zero_group_scale_is_bf16_epsilon() -> None:
    """Chosen convention: qparams in the checkpoint dtype (llm-compressor's), not float32 (1.19e-7)."""
    scheme = get_scheme("kimi-k2-thinking-int4")
    weight = torch.randn(8, 64, dtype=torch.bfloat16)
    weight[3, 32:] = 0  # one all-zero group of 32
    group = scheme.quantization.model_copy(update={"format": scheme.format.value})
    compressed = compress_weight(weight, group)
    assert compressed["weight_scale"].dtype == torch.bfloat16
    assert compressed["weight_scale"][3, 1].item() == BF16_EPS
    float32 = compress_weight(weight.float(), group)  # compressed-tensors on a float32 copy
    assert float32["weight_scale"][3, 1].item() == torch.finfo(torch.float32).eps
    zero_group_words = compressed["weight_packed"][3, 32 * 4 // 32 :]  # int4: 8 values per int32 word
    assert torch.equal(float32["weight_packed"][3, 4:], zero_group_words)  # packed values agree
