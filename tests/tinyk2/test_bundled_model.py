"""The bundled kimi-k2-tiny: Kimi K2's structure, stored as real checkpoints are, loads offline."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open
from tinyk2.tokenizer import KIMI_SPECIAL_TOKENS
from transformers import AutoModelForCausalLM, AutoTokenizer

MAX_COMMITTED_WEIGHT_BYTES = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def config(bundled_model) -> dict:
    return json.loads((bundled_model / "config.json").read_text())


@pytest.fixture(scope="module")
def tensors(bundled_model) -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """name -> (shard file, dtype, shape), read from the shards themselves."""
    out = {}
    for shard in sorted(bundled_model.glob("*.safetensors")):
        with safe_open(shard, framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_slice(name)
                out[name] = (shard.name, tensor.get_dtype(), tuple(tensor.get_shape()))
    return out


def test_config_mirrors_kimi_k2(config):
    assert config["architectures"] == ["DeepseekV3ForCausalLM"]
    assert config["model_type"] == "deepseek_v3"
    assert config["kv_lora_rank"] == 512 and config["qk_rope_head_dim"] == 64
    assert config["q_lora_rank"]
    assert config["first_k_dense_replace"] == 1
    assert config["num_hidden_layers"] >= 4
    assert config["n_routed_experts"] >= 16 and config["num_experts_per_tok"] >= 4
    assert config["n_shared_experts"] == 1
    assert config["scoring_func"] == "sigmoid" and config["topk_method"] == "noaux_tc"
    assert config["n_group"] == 1 and config["topk_group"] == 1
    assert config["norm_topk_prob"] is True
    assert config["routed_scaling_factor"] > 0
    assert config["tie_word_embeddings"] is False
    assert "auto_map" not in config  # no remote code


def test_shards_index_and_per_expert_tensors(bundled_model, config, tensors):
    index = json.loads((bundled_model / "model.safetensors.index.json").read_text())
    shards = sorted(bundled_model.glob("*.safetensors"))
    assert len(shards) >= 2
    assert index["weight_map"] == {name: shard for name, (shard, _, _) in tensors.items()}
    assert sum(p.stat().st_size for p in shards) <= MAX_COMMITTED_WEIGHT_BYTES
    for layer in range(config["first_k_dense_replace"], config["num_hidden_layers"]):
        for expert in range(config["n_routed_experts"]):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                assert f"model.layers.{layer}.mlp.experts.{expert}.{proj}.weight" in tensors
        assert tensors[f"model.layers.{layer}.mlp.gate.e_score_correction_bias"][1] == "F32"
    assert not any("gate_up_proj" in name for name in tensors)
    assert "model.layers.0.mlp.gate_proj.weight" in tensors  # the first layer is dense


def test_weights_are_bf16_and_in_features_divide_128(tensors):
    for name, (_, dtype, shape) in tensors.items():
        if name.endswith("e_score_correction_bias"):
            continue
        assert dtype == "BF16", name
        if len(shape) == 2 and not re.search(r"embed_tokens|mlp\.gate\.weight", name):
            assert shape[1] % 128 == 0, f"{name} in_features {shape[1]}"


def test_loads_offline_and_generates(bundled_model):
    tokenizer = AutoTokenizer.from_pretrained(bundled_model)
    model = AutoModelForCausalLM.from_pretrained(bundled_model, dtype=torch.float32)
    assert type(model).__name__ == "DeepseekV3ForCausalLM"
    router = model.model.layers[1].mlp.gate
    assert router.e_score_correction_bias.abs().sum() > 0  # trained with aux-loss-free balancing
    ids = tokenizer("The capital of", return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == tokenizer.bos_token_id
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5 or tokenizer.eos_token_id in out[0].tolist()


def test_tokenizer_has_kimi_special_tokens(bundled_model):
    tokenizer = AutoTokenizer.from_pretrained(bundled_model)
    for token in KIMI_SPECIAL_TOKENS:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token
    generation = json.loads((bundled_model / "generation_config.json").read_text())
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in generation["eos_token_id"]
