"""`quantgate quantize` and `quantgate inspect`.

Lean at import: the parser is built without torch or compressed-tensors. `quantize` starts
hashing the source (quant.prefetch) before it imports them: that import (about 8 s of one core
on a 2-core machine) and the hashing then run side by side.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from quant.gptq.arguments import add_gptq_arguments, gptq_request
from quant.prefetch import SourceHasher, start_hasher
from quantgate.core.errors import InputError
from quantgate.core.fp8 import BF16_TARGET
from quantgate.core.reference import resolve_reference

if TYPE_CHECKING:
    from quant.build import Outcome, QuantizeRequest


def add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="BF16 source: a checkpoint folder, its model.safetensors, or a Hugging Face ORG/NAME[@REV]"
    )
    parser.add_argument(
        "--scheme",
        help="registered scheme (kimi-k2-thinking-int4, w4a16-g128, w8a16, fp8-block, ...) or the compressed-tensors "
        f"preset it is (W4A16, W8A8, INT8, FP8_BLOCK, NVFP4A16); an unknown name lists them all; '{BF16_TARGET}': "
        "write a block-FP8 source's BF16 weights (nothing quantized)",
    )
    parser.add_argument("--out", type=Path, help="output directory (default: beside the model, named)")
    parser.add_argument("--variants", type=Path, help="YAML file describing several variants to build")
    parser.add_argument(
        "--workers", type=int, default=None, help="shards quantized in parallel (threads; default: CPUs)"
    )
    parser.add_argument("--method", choices=["rtn", "gptq"], default="rtn", help="rtn: data-free; gptq: calibrated")
    add_gptq_arguments(parser)


def _build(args: argparse.Namespace, request: QuantizeRequest, hasher: SourceHasher | None = None) -> Outcome | None:
    """RTN, or GPTQ (under torchrun only rank 0 returns an outcome)."""
    if args.method == "rtn":
        from quant.build import quantize

        return quantize(request, hasher)
    from quant.gptq.run import quantize_gptq

    return quantize_gptq(gptq_request(args, request.model, request.scheme, request.out, request.output_root))


def _report(outcome: Outcome | None) -> None:
    if outcome is None:
        return
    bpw = outcome.manifest.bits_per_weight
    verb = "reused" if outcome.reused else "wrote"
    print(f"{verb} {outcome.path} ({outcome.manifest.scheme.name}, {bpw.overall:.2f} bits/weight overall)")


def run_quantize(args: argparse.Namespace) -> int:
    workers = args.workers if args.workers is not None else os.cpu_count() or 1
    if args.model is not None:
        args.model = resolve_reference(args.model, "--model")
    hasher = None
    if args.variants is None and args.method == "rtn" and args.model is not None and workers >= 1:
        hasher = start_hasher(args.model, workers)  # before the imports below
    try:
        return _run_quantize(args, workers, hasher)
    finally:
        if hasher is not None:
            hasher.close()


def _run_quantize(args: argparse.Namespace, workers: int, hasher: SourceHasher | None) -> int:
    from quant.build import QuantizeRequest
    from quant.schemes import get_scheme
    from quant.variants import load_variants
    from quantgate.core.families import family_of_checkpoint

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
    if args.scheme == BF16_TARGET:
        if args.method != "rtn":
            raise InputError(f"--scheme {BF16_TARGET} quantizes nothing; --method {args.method} does not apply")
        from quant.build import write_bf16

        print(f"wrote {write_bf16(args.model, args.out, workers, hasher)} (BF16, dequantized from block FP8)")
        return 0
    request = QuantizeRequest(
        args.model, get_scheme(args.scheme, family_of_checkpoint(args.model)), out=args.out, workers=workers
    )
    _report(_build(args, request, hasher))
    return 0


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by `quantgate quantize`")


def run_inspect(args: argparse.Namespace) -> int:
    from quant.inspect import summarise

    print(summarise(args.checkpoint))
    return 0
