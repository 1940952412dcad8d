"""The scheme registry: compressed-tensors objects, named MoE patterns, Moonshot's Kimi config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme

from quant.schemes import (
    ALL_LINEAR_BUT_LM_HEAD_IGNORE,
    PRESET_ALIASES,
    get_scheme,
    preset,
    resolve_patterns,
    scheme_names,
)
from quantgate.core.errors import InputError
from quantgate.core.families import ATTENTION, LM_HEAD, ROUTED_EXPERTS

MOONSHOT_CONFIG = Path(__file__).resolve().parents[1] / "data" / "kimi_k2_thinking_quantization_config.json"

# Keys compressed-tensors 0.20 writes that Moonshot's (older compressed-tensors) config.json lacks:
# the writer's version, empty sparsity/transform blocks, unset newer fields, and the group's format
# (equal to the top-level one). Args fields at their defaults are omitted by 0.20's serialiser.
NEUTRAL_TOP = {
    "sparsity_config": {},
    "transform_config": {},
    "global_compression_ratio": None,
    "moe_sparsity_config": None,
}
ARGS_DEFAULTS = {"actorder": None, "block_structure": None, "observer_kwargs": {}}


def normalise(config: dict) -> dict:
    """Drop only version-dependent keys, and only when they hold their neutral values."""
    config = json.loads(json.dumps(config))
    config.pop("version", None)  # the compressed-tensors version that wrote it
    for key, neutral in NEUTRAL_TOP.items():
        if config.get(key, neutral) == neutral:
            config.pop(key, None)
    for group in config["config_groups"].values():
        if group.get("format") == config["format"]:
            del group["format"]
        for args_key in ("weights", "input_activations", "output_activations"):
            args = group.get(args_key)
            for key, default in ARGS_DEFAULTS.items():
                if args is not None and args.get(key, default) == default:
                    args.pop(key, None)
    return config


def test_kimi_config_equals_moonshots_release(built) -> None:
    outcome = built("kimi-k2-thinking-int4")
    written = json.loads((outcome.path / "config.json").read_text())["quantization_config"]
    assert written["version"]  # compressed-tensors stamps its version; normalised away below
    assert normalise(written) == normalise(json.loads(MOONSHOT_CONFIG.read_text()))
    assert written["ignore"] == json.loads(MOONSHOT_CONFIG.read_text())["ignore"]  # order too


def test_every_scheme_is_compressed_tensors_data() -> None:
    for name in scheme_names():
        scheme = get_scheme(name)
        assert isinstance(scheme.quantization, QuantizationScheme)
        config = scheme.quantization_config()
        assert isinstance(config, QuantizationConfig)
        assert QuantizationConfig.model_validate(config.model_dump()) == config
        assert scheme.version == 1


def test_required_schemes_are_registered() -> None:
    assert {
        "kimi-k2-thinking-int4",
        "w4a16-g128",
        "w8a16",
        "fp8-block",
        "w8a8-int8",
        "nvfp4a16",
        "w3a16-g32",
        "w2a16-g32",
    } <= set(scheme_names())


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match="unknown scheme 'w5'.*kimi-k2-thinking-int4.*w8a16"):
        get_scheme("w5")
    with pytest.raises(InputError, match="unknown scheme 'kimi-k2-int4'; did you mean 'kimi-k2-thinking-int4'"):
        get_scheme("kimi-k2-int4")


def test_preset_names_are_aliases_of_the_schemes_that_are_exactly_that_preset() -> None:
    """`--scheme W4A16` as llm-compressor users write it: the same compressed-tensors scheme, on every
    Linear but lm_head. W8A16 is no alias: the preset is group 128, `w8a16` per channel."""
    for preset_name, name in PRESET_ALIASES.items():
        scheme = get_scheme(preset_name)
        assert scheme.name == name and scheme.quantization == preset(preset_name)
        assert scheme.ignore == ALL_LINEAR_BUT_LM_HEAD_IGNORE
    assert "W8A16" not in PRESET_ALIASES and get_scheme("w8a16").quantization != preset("W8A16")


def test_patterns_resolve_moe_group_names() -> None:
    assert resolve_patterns(["routed_experts", "attention", "lm_head", "re:.*x$"], "ignore") == (
        ROUTED_EXPERTS,
        ATTENTION,
        LM_HEAD,
        "re:.*x$",
    )
    with pytest.raises(InputError, match="'experts'.*neither a MoE group"):
        resolve_patterns(["experts"], "ignore")
