"""Which tensors of a checkpoint a scheme quantizes, decided from names and shapes alone.

On disk there are no module classes, so "Linear" means: a 2-D `.weight` whose module is not
one that the checkpoint's family builds as something else (the router is a TopkRouter, the
embeddings an Embedding). Those, norms and `e_score_correction_bias` are never quantized,
whatever the scheme's ignore list says. The scheme's patterns must be resolved for the
checkpoint's family (`get_scheme(name, family)`).
"""

from __future__ import annotations

from dataclasses import dataclass

from compressed_tensors.quantization import QuantizationStrategy

from quant.schemes import LINEAR_TARGET, Scheme
from quant.source import SourceCheckpoint
from quantgate.core.errors import InputError
from quantgate.core.families import DEEPSEEK_V3, EMBEDDINGS, ROUTER, Family, matches

NEVER_QUANTIZED = (ROUTER, EMBEDDINGS)  # DeepSeek-V3's 2-D weights of modules that are not nn.Linear
WEIGHT_SUFFIX = ".weight"


@dataclass(frozen=True)
class QuantPlan:
    quantized: frozenset[str]  # tensor names (`....weight`) to quantize

    def is_quantized(self, tensor_name: str) -> bool:
        return tensor_name in self.quantized


def module_of(tensor_name: str) -> str:
    return tensor_name.removesuffix(WEIGHT_SUFFIX)


def never_quantized(family: Family) -> tuple[str, ...]:
    """Patterns of `family`'s 2-D weights whose modules are not nn.Linear (router, embeddings)."""
    return tuple(p for p in (family.router, EMBEDDINGS) if p is not None)


def is_linear_weight(tensor_name: str, shape: tuple[int, ...], family: Family = DEEPSEEK_V3) -> bool:
    if not tensor_name.endswith(WEIGHT_SUFFIX) or len(shape) != 2:
        return False
    return not any(matches(pattern, module_of(tensor_name)) for pattern in never_quantized(family))


def _is_target(module: str, targets: list[str]) -> bool:
    return any(t == LINEAR_TARGET or matches(t, module) for t in targets)


def plan_quantization(source: SourceCheckpoint, scheme: Scheme) -> QuantPlan:
    """The tensors to quantize; raises InputError when the scheme and the checkpoint disagree."""
    family = source.family
    if scheme.family != family.name:
        raise InputError(
            f"scheme {scheme.name!r} names {scheme.family} modules, {source.path} is a {family.name} checkpoint"
        )
    targets = list(scheme.quantization.targets)
    quantized = set()
    for name, info in source.tensors.items():
        module = module_of(name)
        if not is_linear_weight(name, info.shape, family):
            continue  # norms, router, embeddings, biases: kept even when a target pattern names them
        if _is_target(module, targets) and not any(matches(p, module) for p in scheme.ignore):
            quantized.add(name)
    if not quantized and scheme.expected_groups and not set(scheme.expected_groups) & family.groups.keys():
        raise InputError(
            f"scheme {scheme.name!r} quantizes {', '.join(scheme.expected_groups)} only; "
            f"{source.path} is a {family.name} checkpoint, which has none"
        )
    if not quantized:
        raise InputError(
            f"scheme {scheme.name!r} quantizes no tensor of {source.path}: "
            f"targets {targets} minus ignore {list(scheme.ignore)} match no Linear weight"
        )
    _check_shapes(source, scheme, quantized)
    _check_groups(source, scheme, quantized)
    return QuantPlan(quantized=frozenset(quantized))


def _check_shapes(source: SourceCheckpoint, scheme: Scheme, quantized: set[str]) -> None:
    weights = scheme.quantization.weights
    if weights.strategy in (QuantizationStrategy.GROUP, QuantizationStrategy.TENSOR_GROUP):
        columns, what = weights.group_size, "group_size"
    elif weights.strategy == QuantizationStrategy.BLOCK:
        columns, what = weights.block_structure[1], "block width"
    else:
        return
    for name in sorted(quantized):
        in_features = source.tensors[name].shape[1]
        if in_features % columns:
            raise InputError(
                f"scheme {scheme.name!r}: {what} {columns} does not divide "
                f"in_features {in_features} of {name}"
            )


def _check_groups(source: SourceCheckpoint, scheme: Scheme, quantized: set[str]) -> None:
    """A scheme that declares which MoE groups it quantizes must quantize exactly those present."""
    if scheme.expected_groups is None:
        return
    family = source.family
    got = {family.group_of(module_of(name)) for name in quantized}
    present = {
        family.group_of(module_of(name))
        for name, info in source.tensors.items()
        if is_linear_weight(name, info.shape, family)
    }
    want = set(scheme.expected_groups) & present
    if got != want:
        raise InputError(
            f"scheme {scheme.name!r} on {source.path}: quantizes MoE groups {sorted(map(str, got))}, "
            f"expected {sorted(want)}"
        )
