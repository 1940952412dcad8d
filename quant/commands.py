"""`quantgate quantize` and `quantgate inspect`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from quant.build import Outcome, QuantizeRequest, quantize
from quant.gptq.cli import add_gptq_arguments, gptq_request
from quant.gptq.run import quantize_gptq
from quant.inspect import summarise
from quant.schemes import get_scheme, scheme_names
from quant.variants import load_variants
from quantgate.errors import InputError


def add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="BF16 source checkpoint directory")
    parser.add_argument("--scheme", help=f"registered scheme: {', '.join(scheme_names())}")
    parser.add_argument("--out", type=Path, help="output directory (default: beside the model, named)")
    parser.add_argument("--variants", type=Path, help="YAML file describing several variants to build")
    parser.add_argument(
        "--workers", type=int, default=None, help="shards quantized in parallel (threads; default: CPUs)"
    )
    parser.add_argument("--method", choices=["rtn", "gptq"], default="rtn", help="rtn: data-free; gptq: calibrated")
    add_gptq_arguments(parser)


def _build(args: argparse.Namespace, request: QuantizeRequest) -> Outcome | None:
    """RTN, or GPTQ (under torchrun only rank 0 returns an outcome)."""
    if args.method == "rtn":
        return quantize(request)
    return quantize_gptq(gptq_request(args, request.model, request.scheme, request.out, request.output_root))


def _report(outcome: Outcome | None) -> None:
    if outcome is None:
        return
    bpw = outcome.manifest.bits_per_weight
    verb = "reused" if outcome.reused else "wrote"
    print(f"{verb} {outcome.path} ({outcome.manifest.scheme.name}, {bpw.overall:.2f} bits/weight overall)")


def run_quantize(args: argparse.Namespace) -> int:
    if args.variants is not None:
        if args.model or args.scheme or args.out:
            raise InputError("--variants: give the model and schemes in the file, not --model/--scheme/--out")
        variants = load_variants(args.variants)
        workers = args.workers if args.workers is not None else variants.workers
        for scheme in variants.schemes():
            request = QuantizeRequest(
                variants.model, scheme, output_root=variants.output_root, workers=workers
            )
            _report(_build(args, request))
        return 0
    if args.model is None or args.scheme is None:
        raise InputError("quantize: give --model and --scheme, or --variants FILE")
    workers = args.workers if args.workers is not None else os.cpu_count() or 1
    request = QuantizeRequest(args.model, get_scheme(args.scheme), out=args.out, workers=workers)
    _report(_build(args, request))
    return 0


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by `quantgate quantize`")


def run_inspect(args: argparse.Namespace) -> int:
    print(summarise(args.checkpoint))
    return 0
