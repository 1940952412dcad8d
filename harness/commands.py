"""`quantgate eval`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from quantgate.errors import InputError


def default_cache_dir() -> Path:
    root = (
        os.environ.get("QUANTGATE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "quantgate"
    )
    return Path(root) / "baselines"


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, action="append", required=True, help="checkpoint to measure (repeatable)"
    )
    parser.add_argument("--baseline", type=Path, help="BF16 checkpoint each model is compared with (cached)")
    parser.add_argument(
        "--suite",
        action="append",
        required=True,
        help="suite name (suites/NAME.yaml) or path to a suite file (repeatable)",
    )
    parser.add_argument("--out", type=Path, required=True, help="results folder: OUT/<model>/<suite>/")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="baseline cache (default: $QUANTGATE_CACHE/baselines or ~/.cache/quantgate/baselines)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=None, help="overrides every suite's batch_size")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")


def run_eval(args: argparse.Namespace) -> int:
    from harness.evaluate import EvalRequest, evaluate

    for option in ("threads", "batch_size"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise InputError(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    request = EvalRequest(
        models=args.model,
        suites=args.suite,
        out=args.out,
        cache_dir=args.cache_dir or default_cache_dir(),
        baseline=args.baseline,
        threads=args.threads,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
    )
    for folder in evaluate(request):
        print(folder / "summary.json")
    return 0
