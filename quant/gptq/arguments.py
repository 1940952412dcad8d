"""`quantgate quantize --method gptq` flags, turned into a GPTQRequest."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from quantgate.core.errors import InputError
from quantgate.core.gptq import DEFAULT_CALIBRATION_SOURCES, CalibrationSpec, GPTQOptions

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
    group.add_argument("--block-size", type=int, default=DEFAULTS.block_size)
    group.add_argument("--dampening", type=float, default=DEFAULTS.dampening, help="fraction of mean(diag H)")
    group.add_argument("--actorder", choices=["none", "static"], default=DEFAULTS.actorder)
    group.add_argument("--observer", choices=["minmax", "mse"], default=DEFAULTS.observer)
    group.add_argument(
        "--min-expert-tokens", type=int, default=DEFAULTS.min_expert_tokens,
        help="routed experts with fewer calibration tokens fall back to RTN",
    )  # fmt: skip
    group.add_argument("--calibrate-all-experts", action="store_true", help="every expert's Hessian sees every token")
    group.add_argument(
        "--routing-weighted", action="store_true", help="weight routed tokens' Hessian terms by routing weight^2"
    )
    group.add_argument("--threads", type=int, default=DEFAULTS.threads, help="torch threads per process")


def gptq_request(
    args: argparse.Namespace, model: Path, scheme: Scheme, out: Path | None, output_root: Path | None
) -> GPTQRequest:
    try:
        options = GPTQOptions(
            block_size=args.block_size, dampening=args.dampening, actorder=args.actorder, observer=args.observer,
            min_expert_tokens=args.min_expert_tokens, calibrate_all_experts=args.calibrate_all_experts,
            routing_weighted=args.routing_weighted, threads=args.threads,
        )  # fmt: skip
        calibration = CalibrationSpec(
            sources=tuple(args.calibration or DEFAULT_CALIBRATION_SOURCES), samples=args.calibration_samples,
            sample_length=args.calibration_length, seed=args.calibration_seed,
        )  # fmt: skip
    except ValidationError as error:
        first = error.errors()[0]
        raise InputError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    from quant.gptq.run import GPTQRequest  # torch, transformers: only once the flags are known good

    return GPTQRequest(model, scheme, out=out, output_root=output_root, options=options, calibration=calibration)
