"""The module structure of DeepSeek-V3 / Kimi K2 checkpoints, named once.

Patterns use compressed-tensors' target syntax: a plain name matches a module name exactly,
`re:` prefixes a regular expression matched against the module name (weights drop `.weight`).
quant/ builds schemes, ignore lists and its per-group summaries (`quantgate inspect`) from these.
"""

from __future__ import annotations

import re

ROUTED_EXPERTS = r"re:.*mlp\.experts\.\d+\.(gate|up|down)_proj$"
SHARED_EXPERTS = r"re:.*shared_experts.*"
ROUTER = r"re:.*mlp\.gate$"
ATTENTION = r"re:.*self_attn.*"
DENSE_MLP = r"re:.*mlp\.(gate|up|gate_up|down)_proj.*"  # Moonshot's spelling; misses experts.* by design
LM_HEAD = "lm_head"
EMBEDDINGS = r"re:.*embed_tokens$"

MOE_GROUPS: dict[str, str] = {
    "routed_experts": ROUTED_EXPERTS,
    "shared_experts": SHARED_EXPERTS,
    "router": ROUTER,
    "attention": ATTENTION,
    "dense_mlp": DENSE_MLP,
    "lm_head": LM_HEAD,
    "embeddings": EMBEDDINGS,
}


def matches(pattern: str, module_name: str) -> bool:
    """compressed-tensors' target semantics: `re:` is a full-string-anchored search, else exact name."""
    if pattern.startswith("re:"):
        return re.match(pattern[3:], module_name) is not None
    return pattern == module_name


def group_of(module_name: str) -> str | None:
    """The first MoE group (in MOE_GROUPS order) that names this module."""
    for group, pattern in MOE_GROUPS.items():
        if matches(pattern, module_name):
            return group
    return None
