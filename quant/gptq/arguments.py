"""`quantgate quantize --method gptq` flags, turned into a GPTQRequest."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from quantgate.core.errors import InputError
from quantgate.core.gptq import DEFAULT_CALIBRATION_SOURCES, SCHEME_DEFAULTS, CalibrationSpec, GPTQOptions

if TYPE_CHECKING:
    from quant.gptq.run import GPTQRequest
    from quant.schemes import Scheme

DEFAULTS = GPTQOptions()
CALIBRATION_DEFAULTS = CalibrationSpec()


def add_gptq_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gptq (--method gptq)")
    group.add_argument(
        "--calibration", action="append", metavar="KIND:PATH[START:STOP]",
        help=f"calibration source, repeatable; KIND text or chat (default: {' '.join(DEFAULT_CALIBRATION_SOURCES)})",
    )  # fmt: skip
    group.add_argument("--calibration-samples", type=int, default=CALIBRATION_DEFAULTS.samples)
    group.add_argument("--calibration-length", type=int, default=CALIBRATION_DEFAULTS.sample_length)
    group.add_argument("--calibration-seed", type=int, default=CALIBRATION_DEFAULTS.seed)
    # None: the scheme's default (GPTQOptions.for_scheme; docs/gptq.md, "Defaults and why")
    group.add_argument("--block-size", type=int, default=None, help=f"default {DEFAULTS.block_size}")
    group.add_argument(
        "--dampening", type=float, default=None,
        help=f"fraction of mean(diag H) (default per scheme: {_per_scheme('dampening')})",
    )  # fmt: skip
    group.add_argument("--actorder", choices=["none", "static"], default=None, help=f"default {DEFAULTS.actorder}")
    group.add_argument(
        "--observer", choices=["minmax", "mse"], default=None,
        help=f"how the fixed scales are chosen (default per scheme: {_per_scheme('observer')})",
    )  # fmt: skip
    group.add_argument(
        "--min-expert-tokens", type=int, default=None,
        help=f"routed experts with fewer calibration tokens fall back to RTN (default {DEFAULTS.min_expert_tokens})",
    )  # fmt: skip
    group.add_argument(
        "--calibrate-all-experts", action=argparse.BooleanOptionalAction, default=None,
        help="every expert's Hessian sees every token",
    )  # fmt: skip
    group.add_argument(
        "--routing-weighted", action=argparse.BooleanOptionalAction, default=None,
        help="weight routed tokens' Hessian terms by routing weight^2",
    )  # fmt: skip
    group.add_argument(
        "--hessian-dtype", choices=["float64", "float32"], default=None,
        help=f"precision of the X^T X accumulator (default {DEFAULTS.hessian_dtype})",
    )  # fmt: skip
    group.add_argument("--threads", type=int, default=None, help=f"threads per process (default {DEFAULTS.threads})")


def _per_scheme(field: str) -> str:
    values = {name: changes[field] for name, changes in SCHEME_DEFAULTS.items() if field in changes}
    shown = ", ".join(f"{name} {value}" for name, value in sorted(values.items()))
    return f"{shown}, otherwise {getattr(DEFAULTS, field)}" if shown else str(getattr(DEFAULTS, field))


OPTION_FLAGS = (
    "block_size", "dampening", "actorder", "observer", "min_expert_tokens", "calibrate_all_experts",
    "routing_weighted", "hessian_dtype", "threads",
)  # fmt: skip


def gptq_request(
    args: argparse.Namespace, model: Path, scheme: Scheme, out: Path | None, output_root: Path | None
) -> GPTQRequest:
    try:
        given = {name: getattr(args, name) for name in OPTION_FLAGS if getattr(args, name) is not None}
        options = GPTQOptions.for_scheme(scheme.name, **given)
        calibration = CalibrationSpec(
            sources=tuple(args.calibration or DEFAULT_CALIBRATION_SOURCES), samples=args.calibration_samples,
            sample_length=args.calibration_length, seed=args.calibration_seed,
        )  # fmt: skip
    except ValidationError as error:
        first = error.errors()[0]
        raise InputError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    from quant.gptq.run import GPTQRequest  # torch, transformers: only once the flags are known good

    return GPTQRequest(model, scheme, out=out, output_root=output_root, options=options, calibration=calibration)
