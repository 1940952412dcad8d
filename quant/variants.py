"""Variants file (YAML): several checkpoints of one model, registered schemes or user-defined ones.

version: 1
model: ../models/kimi-k2-tiny        # relative paths are relative to this file
output_root: ../out                  # optional; default: beside the model
workers: 2                           # optional
variants:
  - scheme: kimi-k2-thinking-int4    # a registered scheme
  - name: w4a16-g64-experts          # a user-defined one: a compressed-tensors preset ...
    preset: W4A16
    group_size: 64
    ignore: [lm_head, attention, shared_experts, dense_mlp]   # MoE group names or raw patterns
  - name: w4-asym-g64                # ... or explicit compressed-tensors QuantizationArgs
    weights: {num_bits: 4, type: int, symmetric: false, strategy: group, group_size: 64}
    format: pack-quantized           # optional; default: what compressed-tensors infers
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from compressed_tensors.config import CompressionFormat
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES
from pydantic import Discriminator, Field, Tag, ValidationError, model_validator

from quant.schemes import LINEAR_TARGET, Scheme, get_scheme, make_scheme, preset, resolve_patterns
from quantgate.core.errors import InputError
from quantgate.core.families import DEEPSEEK_V3, Family, family_of_checkpoint
from quantgate.core.paths import PathName
from quantgate.core.strict import StrictModel
from quantgate.core.typed_yaml import describe, load_typed_yaml

BIT_WIDTHS = {"int": (2, 3, 4, 5, 6, 7, 8), "float": (4, 6, 8, 16)}  # per QuantizationType


class RegisteredVariant(StrictModel):
    scheme: str


class CustomVariant(StrictModel):
    name: PathName  # names its checkpoint folder
    preset: str | None = None  # a compressed-tensors preset name (W4A16, FP8_BLOCK, ...)
    weights: QuantizationArgs | None = None
    input_activations: QuantizationArgs | None = None
    group_size: int | None = Field(None, ge=1)  # overrides the weights' group size
    targets: list[str] = [LINEAR_TARGET]  # "Linear", MoE group names or raw patterns
    ignore: list[str] = ["lm_head"]  # MoE group names or raw patterns
    format: CompressionFormat | None = None

    @model_validator(mode="after")
    def _one_source_of_weights(self) -> CustomVariant:
        if (self.preset is None) == (self.weights is None):
            raise ValueError("give exactly one of 'preset' and 'weights'")
        if self.preset is not None and self.input_activations is not None:
            raise ValueError("'input_activations' comes from the preset; give 'weights' instead of 'preset'")
        for field, args in (("weights", self.weights), ("input_activations", self.input_activations)):
            kind = str(getattr(args.type, "value", args.type)) if args is not None else ""
            if args is not None and args.num_bits not in BIT_WIDTHS.get(kind, ()):
                raise ValueError(
                    f"{field}.num_bits {args.num_bits} is not a {kind} width compressed-tensors packs "
                    f"({', '.join(map(str, BIT_WIDTHS.get(kind, ())))})"
                )
            if args is not None and args.group_size is not None and args.group_size < 1:
                raise ValueError(f"{field}.group_size must be at least 1, got {args.group_size}")
        return self

    def to_scheme(self, family: Family = DEEPSEEK_V3) -> Scheme:
        targets = [t for t in self.targets if t == LINEAR_TARGET] + list(
            resolve_patterns([t for t in self.targets if t != LINEAR_TARGET], "targets", family)
        )
        if self.preset is not None:
            try:
                quantization = preset(self.preset.upper()).model_copy(update={"targets": targets})
            except KeyError:
                raise InputError(
                    f"variant {self.name!r}: unknown compressed-tensors preset {self.preset!r}; "
                    f"known presets: {', '.join(PRESET_SCHEMES)}"
                ) from None
        else:
            quantization = QuantizationScheme(
                targets=targets, weights=self.weights, input_activations=self.input_activations
            )
        if self.group_size is not None:
            weights = quantization.weights.model_dump() | {"group_size": self.group_size, "strategy": "group"}
            quantization = quantization.model_copy(
                update={"weights": QuantizationArgs.model_validate(weights)}
            )
        ignore = resolve_patterns(self.ignore, f"variant {self.name!r} ignore", family)
        return make_scheme(self.name, quantization, ignore, self.format, family=family)


def _variant_kind(value: object) -> str:
    """A variant naming `scheme` is a registered one; anything else is user-defined."""
    fields = value if isinstance(value, dict) else vars(value)
    return "registered" if "scheme" in fields else "custom"


Variant = Annotated[
    Annotated[RegisteredVariant, Tag("registered")] | Annotated[CustomVariant, Tag("custom")],
    Discriminator(_variant_kind),
]


class VariantsFile(StrictModel):
    version: Literal[1]
    model: Path
    output_root: Path | None = None
    workers: int = Field(1, ge=1)
    variants: list[Variant] = Field(min_length=1)

    def schemes(self) -> list[Scheme]:
        """Every variant's scheme, in the module names of the model's family."""
        family = family_of_checkpoint(self.model)
        return [
            get_scheme(v.scheme, family) if isinstance(v, RegisteredVariant) else v.to_scheme(family)
            for v in self.variants
        ]


def load_variants(path: Path) -> VariantsFile:
    variants = load_typed_yaml(path, VariantsFile, hidden_loc=("registered", "custom"))
    base = path.parent
    variants = variants.model_copy(
        update={
            "model": base / variants.model,
            "output_root": base / variants.output_root if variants.output_root else None,
        }
    )
    try:
        schemes = variants.schemes()  # every variant resolved now, in the model's family: a bad one names this file
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    except ValidationError as error:  # compressed-tensors' own models, built from this file's values
        raise InputError(f"{path}: {describe(error)}") from None
    names = [s.name for s in schemes]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise InputError(f"{path}: variants: {duplicates[0]!r} given twice (one checkpoint folder each)")
    return variants
