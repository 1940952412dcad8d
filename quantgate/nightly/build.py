"""Make the plan's variants, one builder per quantization method (an explicit registry).

Checkpoints go to `state/variants/<checkpoint name>`; quant/ reuses a finished one whose manifest
matches (same source hashes, scheme and quantgate version), so a rerun costs a hash check.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from quantgate.core.errors import InputError
from quantgate.core.families import family_of_checkpoint
from quantgate.plan import Plan, PlanVariant

Builder = Callable[[Path, PlanVariant, Path, int], bool]  # (model, variant, target, workers) -> reused


def _build_rtn(model: Path, variant: PlanVariant, target: Path, workers: int) -> bool:
    from quant.build import QuantizeRequest, quantize
    from quant.schemes import get_scheme

    scheme = get_scheme(variant.scheme, family_of_checkpoint(model))
    return quantize(QuantizeRequest(model=model, scheme=scheme, out=target, workers=workers)).reused


def _build_gptq(model: Path, variant: PlanVariant, target: Path, workers: int) -> bool:
    import torch

    from quant.gptq.run import GPTQRequest, quantize_gptq
    from quant.schemes import get_scheme
    from quantgate.core.gptq import CalibrationSpec

    calibration = CalibrationSpec(sources=(variant.calibration,)) if variant.calibration else CalibrationSpec()
    threads = torch.get_num_threads()  # GPTQ pins its own thread count (part of its output's identity)
    try:
        outcome = quantize_gptq(
            GPTQRequest(
                model=model, scheme=get_scheme(variant.scheme, family_of_checkpoint(model)), out=target,
                calibration=calibration,
            )
        )
    finally:
        torch.set_num_threads(threads)
    return outcome.reused


BUILDERS: dict[str, Builder] = {"rtn": _build_rtn, "gptq": _build_gptq}


def check_schemes(plan: Plan) -> None:
    """Fail before any work when a variant names an unknown scheme or method."""
    from quant.schemes import get_scheme

    for index, variant in enumerate(plan.variants):
        if not variant.builds:
            continue  # served or made elsewhere: nothing to build
        if variant.method not in BUILDERS:
            raise InputError(
                f"variants.{index}.method: no builder for method {variant.method!r}; known: {', '.join(BUILDERS)}"
            )
        try:
            get_scheme(variant.scheme)
        except InputError as error:
            raise InputError(f"variants.{index}.scheme: {error}") from None


def build_variant(plan: Plan, variant: PlanVariant, root: Path, workers: int = 1) -> tuple[Path, bool]:
    """(checkpoint folder, reused)."""
    target = root / plan.checkpoint_name(variant)
    return target, BUILDERS[variant.method](plan.model, variant, target, workers)
