"""Quantization schemes: compressed-tensors' own scheme objects plus named MoE ignore patterns.

A `Scheme` is typed data. Its weights/activations are compressed-tensors `QuantizationArgs`
(usually a compressed-tensors preset), its ignore list is declared in MoE group names and
resolved to the patterns of the checkpoint's family (`quantgate.core.families`), and its
`quantization_config()` is compressed-tensors' `QuantizationConfig`, which is what lands in the
checkpoint's config.json. Schemes live in an explicit registry; `get_scheme(name, family)`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from compressed_tensors.compressors.format import infer_module_format
from compressed_tensors.config import CompressionFormat
from compressed_tensors.quantization import (
    QuantizationArgs,
    QuantizationConfig,
    QuantizationScheme,
    QuantizationStatus,
    preset_name_to_scheme,
)
from pydantic import field_validator
from torch.nn import Linear

from quantgate.core.errors import InputError
from quantgate.core.families import DEEPSEEK_V3, GROUP_NAMES, LM_HEAD, Family
from quantgate.core.strict import StrictModel

SCHEME_VERSION = 1
LINEAR_TARGET = "Linear"  # compressed-tensors' class target: every nn.Linear

# Ignore lists in MoE group names, resolved per family (groups a family lacks drop out).
# Moonshot's ignore list for Kimi-K2-Thinking, in Moonshot's order: only routed experts are quantized.
ROUTED_EXPERTS_ONLY_IGNORE: tuple[str, ...] = ("lm_head", "attention", "shared_experts", "dense_mlp")
ALL_LINEAR_BUT_LM_HEAD_IGNORE: tuple[str, ...] = ("lm_head",)


class Scheme(StrictModel):
    """One way to quantize a checkpoint: compressed-tensors' scheme, an ignore list and a format."""


    version: int = SCHEME_VERSION
    name: str
    quantization: QuantizationScheme  # compressed-tensors' object; targets are module names or "Linear"
    ignore: tuple[str, ...]  # resolved patterns (compressed-tensors target syntax)
    format: CompressionFormat
    family: str = DEEPSEEK_V3.name  # the model family whose module names `ignore` (and targets) use
    # MoE groups (quantgate.moe) this scheme is meant to quantize; None: not declared (user variants)
    expected_groups: tuple[str, ...] | None = None

    @field_validator("ignore")
    @classmethod
    def _patterns_compile(cls, ignore: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in ignore:
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as error:
                    raise ValueError(f"ignore pattern {pattern!r} is not a valid regex: {error}") from None
        return ignore

    def quantization_config(self) -> QuantizationConfig:
        """The compressed-tensors config that goes into config.json (status: compressed)."""
        group = self.quantization.model_copy(update={"format": self.format.value})
        return QuantizationConfig(
            config_groups={"group_0": group},
            format=self.format.value,
            quantization_status=QuantizationStatus.COMPRESSED,
            ignore=list(self.ignore),
        )


def resolve_patterns(
    names: list[str] | tuple[str, ...], field: str, family: Family = DEEPSEEK_V3
) -> tuple[str, ...]:
    """MoE group names become `family`'s patterns (dropped where the family has no such group);
    other entries are kept as is."""
    resolved = []
    groups = family.groups
    for name in names:
        if name in GROUP_NAMES:
            if name in groups:
                resolved.append(groups[name])
        elif name.startswith("re:"):
            try:
                re.compile(name[3:])
            except re.error as error:
                raise InputError(f"{field}: {name!r} is not a valid regular expression ({error})") from None
            resolved.append(name)
        elif "." in name or name == LM_HEAD:
            resolved.append(name)
        else:
            raise InputError(
                f"{field}: {name!r} is neither a MoE group ({', '.join(GROUP_NAMES)}) "
                "nor a pattern ('re:REGEX' or an exact module name)"
            )
    return tuple(resolved)


def make_scheme(
    name: str,
    quantization: QuantizationScheme,
    ignore: tuple[str, ...],
    format: CompressionFormat | str | None = None,
    expected_groups: tuple[str, ...] | None = None,
    family: Family = DEEPSEEK_V3,
) -> Scheme:
    """A Scheme whose format, when not given, is the one compressed-tensors infers for a Linear."""
    if quantization.weights is None:
        raise InputError(f"scheme {name!r}: no weight quantization (data-free RTN quantizes weights)")
    inferred = infer_module_format(Linear, quantization)
    return Scheme(
        name=name,
        quantization=quantization,
        ignore=ignore,
        format=CompressionFormat(format) if format is not None else inferred,
        expected_groups=expected_groups,
        family=family.name,
    )


def preset(preset_name: str, **weight_overrides: object) -> QuantizationScheme:
    """A compressed-tensors preset scheme targeting Linear, with weight fields overridden."""
    scheme = preset_name_to_scheme(preset_name, targets=[LINEAR_TARGET])
    if weight_overrides:
        weights = scheme.weights.model_dump() | weight_overrides
        scheme = scheme.model_copy(update={"weights": QuantizationArgs.model_validate(weights)})
    return scheme


Builder = Callable[[Family], Scheme]
_REGISTRY: dict[str, Builder] = {}


def register_scheme(name: str) -> Callable[[Builder], Builder]:
    def register(build: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"scheme {name!r} registered twice")
        _REGISTRY[name] = build
        return build

    return register


def scheme_names() -> list[str]:
    return sorted(_REGISTRY)


# compressed-tensors' preset names (as llm-compressor's `scheme=` takes them) for the registered schemes
# that are exactly that preset on every Linear but lm_head. W8A16 is not one: the preset is group 128,
# `w8a16` is per channel.
PRESET_ALIASES: dict[str, str] = {
    "W4A16": "w4a16-g128",
    "W8A8": "w8a8-int8",
    "INT8": "w8a8-int8",
    "FP8_BLOCK": "fp8-block",
    "NVFP4A16": "nvfp4a16",
}


def get_scheme(name: str, family: Family = DEEPSEEK_V3) -> Scheme:
    """The registered scheme `name` (or the compressed-tensors preset name it is, PRESET_ALIASES), its
    ignore list in `family`'s module names."""
    name = PRESET_ALIASES.get(name, name)
    if name not in _REGISTRY:
        known = scheme_names() + sorted(PRESET_ALIASES)
        close = difflib.get_close_matches(name, known, n=1) or difflib.get_close_matches(name.lower(), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        aliases = ", ".join(f"{preset} = {scheme}" for preset, scheme in PRESET_ALIASES.items())
        raise InputError(f"unknown scheme {name!r}; {hint}known schemes: {', '.join(scheme_names())} ({aliases})")
    scheme = _REGISTRY[name](family)
    assert scheme.name == name, f"scheme registered as {name!r} calls itself {scheme.name!r}"
    return scheme


ROUTED = ("routed_experts",)
EVERY_LINEAR_BUT_LM_HEAD = ("routed_experts", "shared_experts", "attention", "dense_mlp")


@register_scheme("kimi-k2-thinking-int4")
def kimi_k2_thinking_int4(family: Family) -> Scheme:
    """Moonshot's Kimi-K2-Thinking release: int4 symmetric, group 32, routed experts only."""
    weights = QuantizationArgs(
        num_bits=4, type="int", symmetric=True, strategy="group", group_size=32, dynamic=False,
        observer="minmax",  # Moonshot's config.json spells the observer out
    )  # fmt: skip
    quantization = QuantizationScheme(targets=[LINEAR_TARGET], weights=weights)
    return make_scheme(
        "kimi-k2-thinking-int4",
        quantization,
        resolve_patterns(ROUTED_EXPERTS_ONLY_IGNORE, "ignore", family),
        CompressionFormat.pack_quantized,
        expected_groups=ROUTED,
        family=family,
    )


@register_scheme("w4a16-g128")
def w4a16_g128(family: Family) -> Scheme:
    return make_scheme(
        "w4a16-g128", preset("W4A16"), resolve_patterns(ALL_LINEAR_BUT_LM_HEAD_IGNORE, "ignore", family),
        expected_groups=EVERY_LINEAR_BUT_LM_HEAD, family=family,
    )


@register_scheme("w8a16")
def w8a16(family: Family) -> Scheme:
    """int8 weights, one scale per output channel (the W8A16 preset is group 128; this is per channel)."""
    quantization = preset("W8A16", strategy="channel", group_size=None)
    return make_scheme(
        "w8a16", quantization, resolve_patterns(ALL_LINEAR_BUT_LM_HEAD_IGNORE, "ignore", family),
        expected_groups=EVERY_LINEAR_BUT_LM_HEAD, family=family,
    )


@register_scheme("fp8-block")
def fp8_block(family: Family) -> Scheme:
    """DeepSeek-V3's shipping format: fp8 128x128 weight blocks, dynamic per-token-group fp8 activations."""
    return make_scheme(
        "fp8-block",
        preset("FP8_BLOCK"),
        resolve_patterns(ALL_LINEAR_BUT_LM_HEAD_IGNORE, "ignore", family),
        CompressionFormat.float_quantized,
        expected_groups=EVERY_LINEAR_BUT_LM_HEAD,
        family=family,
    )


@register_scheme("w8a8-int8")
def w8a8_int8(family: Family) -> Scheme:
    """int8 per-channel weights, dynamic per-token int8 activations."""
    return make_scheme(
        "w8a8-int8",
        preset("W8A8"),
        resolve_patterns(ALL_LINEAR_BUT_LM_HEAD_IGNORE, "ignore", family),
        CompressionFormat.int_quantized,
        expected_groups=EVERY_LINEAR_BUT_LM_HEAD,
        family=family,
    )


@register_scheme("nvfp4a16")
def nvfp4a16(family: Family) -> Scheme:
    """fp4 (e2m1) weights, fp8 scales per 16 and a float32 global scale per tensor."""
    return make_scheme(
        "nvfp4a16",
        preset("NVFP4A16"),
        resolve_patterns(ALL_LINEAR_BUT_LM_HEAD_IGNORE, "ignore", family),
        CompressionFormat.nvfp4_pack_quantized,
        expected_groups=EVERY_LINEAR_BUT_LM_HEAD,
        family=family,
    )


@register_scheme("w3a16-g32")
def w3a16_g32(family: Family) -> Scheme:
    """Low-bit stress variant: int3 group 32 on routed experts."""
    return make_scheme(
        "w3a16-g32", preset("W3A16", group_size=32), resolve_patterns(ROUTED_EXPERTS_ONLY_IGNORE, "ignore", family),
        expected_groups=ROUTED, family=family,
    )


@register_scheme("w2a16-g32")
def w2a16_g32(family: Family) -> Scheme:
    """Low-bit stress variant: int2 group 32 on routed experts."""
    return make_scheme(
        "w2a16-g32", preset("W2A16", group_size=32), resolve_patterns(ROUTED_EXPERTS_ONLY_IGNORE, "ignore", family),
        expected_groups=ROUTED, family=family,
    )
