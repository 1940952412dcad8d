"""The kimi-k2-tiny architecture: Kimi K2's config.json at tiny scale.

Kept from Kimi K2: MLA with kv_lora_rank 512 and qk_rope_head_dim 64 (vLLM's CPU MLA backends need
512 + 64 = 576), one dense layer first, sigmoid scoring with the noaux_tc top-k and a correction bias,
one group, normalised top-k weights, a routed scaling factor, one shared expert, untied embeddings.
Every quantizable in_features (hidden 128, q_lora 128, kv_lora 512, heads*v_head 128, moe 128,
dense 512) is a multiple of 128, so group sizes 32 and 128 apply everywhere.
"""

from __future__ import annotations

from transformers import DeepseekV3Config


def kimi_k2_tiny_config(vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int) -> DeepseekV3Config:
    return DeepseekV3Config(
        architectures=["DeepseekV3ForCausalLM"],
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        moe_intermediate_size=128,
        num_hidden_layers=4,
        first_k_dense_replace=1,
        moe_layer_freq=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=128,
        kv_lora_rank=512,
        qk_rope_head_dim=64,
        qk_nope_head_dim=32,
        v_head_dim=32,
        n_routed_experts=16,
        num_experts_per_tok=4,
        n_shared_experts=1,
        n_group=1,
        topk_group=1,
        topk_method="noaux_tc",
        scoring_func="sigmoid",
        norm_topk_prob=True,
        routed_scaling_factor=2.827,
        seq_aux=True,
        aux_loss_alpha=0.001,
        ep_size=1,
        num_nextn_predict_layers=0,
        hidden_act="silu",
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        tie_word_embeddings=False,
        attention_bias=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=True,
        dtype="bfloat16",
    )
