"""Model families quantgate knows, and the on-disk module names of each one's MoE groups, named once.

A family is found from a checkpoint's `config.json` (`model_type`, else `architectures`); an
unknown one is an InputError that lists the supported ones. Patterns use compressed-tensors'
target syntax: a plain name matches a module name exactly, `re:` prefixes a regular expression
matched against the module name (weights drop `.weight`). Names are the checkpoint's (the Hub
layout), not transformers' in-memory ones: transformers 5 renames and fuses experts on load.
quant/ builds schemes, ignore lists, GPTQ's per-expert calibration and its per-group summaries
(`quantgate inspect`) from these; harness/ finds the routers to compare from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from quantgate.core.checkpoint import CONFIG_NAME, read_json_object
from quantgate.core.errors import InputError

LM_HEAD = "lm_head"
EMBEDDINGS = r"re:.*embed_tokens$"
ATTENTION = r"re:.*self_attn.*"
GROUP_NAMES = ("routed_experts", "shared_experts", "router", "attention", "dense_mlp", "lm_head", "embeddings")


@dataclass(frozen=True)
class Family:
    """One model family: how its checkpoints name each MoE group (None: the family has no such group)."""

    name: str
    model_types: tuple[str, ...]  # config.json `model_type` values
    architectures: tuple[str, ...]  # config.json `architectures` values
    routed_experts: str | None
    shared_experts: str | None
    router: str | None
    attention: str
    dense_mlp: str | None
    # routed expert weight names on disk: groups (prefix, expert, projection); projection as on disk
    expert_weight: str | None = None
    # on-disk projection name -> gate_proj / up_proj / down_proj (the SwiGLU roles)
    projections: tuple[tuple[str, str], ...] = (("gate_proj", "gate_proj"), ("up_proj", "up_proj"),
                                                ("down_proj", "down_proj"))  # fmt: skip
    # transformers' in-memory name of the MoE block that holds `gate` (router) and `experts`
    moe_block: str = "mlp"

    @property
    def groups(self) -> dict[str, str]:
        """Group name -> pattern, in the order `group_of` tries them; absent groups left out."""
        patterns = {
            "routed_experts": self.routed_experts,
            "shared_experts": self.shared_experts,
            "router": self.router,
            "attention": self.attention,
            "dense_mlp": self.dense_mlp,
            "lm_head": LM_HEAD,
            "embeddings": EMBEDDINGS,
        }
        return {group: pattern for group, pattern in patterns.items() if pattern is not None}

    def group_of(self, module_name: str) -> str | None:
        """The first MoE group that names this module."""
        for group, pattern in self.groups.items():
            if matches(pattern, module_name):
                return group
        return None

    def expert_of(self, module_name: str) -> tuple[str, int, str] | None:
        """A routed expert's Linear on disk -> (MoE block prefix, expert index, SwiGLU role); else None."""
        if self.expert_weight is None:
            return None
        found = re.fullmatch(self.expert_weight, module_name)
        if found is None:
            return None
        prefix, expert, projection = found.groups()
        return prefix, int(expert), dict(self.projections)[projection]


DEEPSEEK_V3 = Family(
    name="deepseek_v3",
    model_types=("deepseek_v3", "kimi_k2"),
    architectures=("DeepseekV3ForCausalLM", "DeepseekV3ForCausalLMNextN"),
    routed_experts=r"re:.*mlp\.experts\.\d+\.(gate|up|down)_proj$",
    shared_experts=r"re:.*shared_experts.*",
    router=r"re:.*mlp\.gate$",
    attention=ATTENTION,
    dense_mlp=r"re:.*mlp\.(gate|up|gate_up|down)_proj.*",  # Moonshot's spelling; misses experts.* by design
    expert_weight=r"(.*mlp)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)",
)
QWEN3_MOE = Family(
    name="qwen3_moe",
    model_types=("qwen3_moe",),
    architectures=("Qwen3MoeForCausalLM",),
    routed_experts=r"re:.*mlp\.experts\.\d+\.(gate|up|down)_proj$",
    shared_experts=None,
    router=r"re:.*mlp\.gate$",
    attention=ATTENTION,
    dense_mlp=r"re:.*mlp\.(gate|up|down)_proj$",  # layers in `mlp_only_layers`
    expert_weight=r"(.*mlp)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)",
)
MIXTRAL = Family(
    name="mixtral",
    model_types=("mixtral",),
    architectures=("MixtralForCausalLM",),
    routed_experts=r"re:.*block_sparse_moe\.experts\.\d+\.w[123]$",
    shared_experts=None,
    router=r"re:.*block_sparse_moe\.gate$",
    attention=ATTENTION,
    dense_mlp=None,
    expert_weight=r"(.*block_sparse_moe)\.experts\.(\d+)\.(w1|w2|w3)",
    projections=(("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")),
)
LLAMA = Family(  # the dense control
    name="llama",
    model_types=("llama",),
    architectures=("LlamaForCausalLM",),
    routed_experts=None,
    shared_experts=None,
    router=None,
    attention=ATTENTION,
    dense_mlp=r"re:.*mlp\.(gate|up|down)_proj$",
)
FAMILIES: dict[str, Family] = {family.name: family for family in (DEEPSEEK_V3, QWEN3_MOE, MIXTRAL, LLAMA)}

# The reference family's patterns under their historical names (the bundled model is DeepSeek-V3-shaped).
ROUTED_EXPERTS = DEEPSEEK_V3.routed_experts
SHARED_EXPERTS = DEEPSEEK_V3.shared_experts
ROUTER = DEEPSEEK_V3.router
DENSE_MLP = DEEPSEEK_V3.dense_mlp
MOE_GROUPS: dict[str, str] = DEEPSEEK_V3.groups


def supported() -> str:
    return ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES.values())


def family_of_config(config: dict, where: Path | str) -> Family:
    """The family a config.json describes: by `model_type`, else by `architectures`."""
    if not isinstance(config, dict):
        raise InputError(f"{where}: not a JSON object (got {type(config).__name__})")
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise InputError(f"{where}: architectures: not a list of class names")
    if model_type is not None and not isinstance(model_type, str):
        raise InputError(f"{where}: model_type: missing or not a string (the model's config keys)")
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    for family in FAMILIES.values():
        if any(arch in family.architectures for arch in architectures):
            return family
    named = "/".join(architectures) or "no architectures"
    raise InputError(
        f"{where}: architecture {named} (model_type {model_type!r}) is not supported; supported: {supported()}"
    )


def family_of_checkpoint(model_dir: Path) -> Family:
    """The family of the checkpoint folder `model_dir` (from its config.json)."""
    if not Path(model_dir).is_dir():
        raise InputError(f"{model_dir}: not a checkpoint directory")
    path = Path(model_dir) / CONFIG_NAME
    return family_of_config(read_json_object(path), path)


def matches(pattern: str, module_name: str) -> bool:
    """compressed-tensors' target semantics: `re:` is a full-string-anchored search, else exact name."""
    if pattern.startswith("re:"):
        return re.match(pattern[3:], module_name) is not None
    return pattern == module_name


def group_of(module_name: str, family: Family = DEEPSEEK_V3) -> str | None:
    """The first MoE group of `family` that names this module."""
    return family.group_of(module_name)
