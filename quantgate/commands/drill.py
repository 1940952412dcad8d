"""`quantgate drill`: each gate's false-alarm rate, the plan's baseline measured against itself under other
settings that leave the model the same (quantgate/nightly/drill.py). Exit 0 when no gate raised a false
alarm, 1 when one did, 2 on bad input, 3 when a server of the backend condition failed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.serve import ENGINES
from quantgate.core.errors import InputError


def add_drill_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, metavar="FILE", help="the plan (YAML)")
    parser.add_argument("--runs", type=int, default=1, metavar="N", help="measurements per condition (default 1)")
    parser.add_argument(
        "--suite", action="append", default=[], metavar="NAME", help="drill this suite of the plan only (repeatable)"
    )
    parser.add_argument("--threads", type=int, default=None, help="the reference's CPU threads (default: torch's)")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype of the whole drill"
    )
    parser.add_argument(
        "--backend", action="append", default=None, choices=[*ENGINES, "none"], metavar="ENGINE",
        help=f"also measure the copy through this engine's server ({', '.join(ENGINES)}; default: the plan's serve "
        "engine, if any; none: no server)",
    )
    parser.add_argument(
        "--toolcall-mode", choices=["chat", "raw"], default=None,
        help="backend condition: the engine parses tool calls (chat) or the harness does (raw; default: the plan's "
        "serve setting, else raw)",
    )
    parser.add_argument(
        "--condition", action="append", default=[], metavar="NAME",
        help="drill under this condition only (repeatable; repeat, threads=T, batch=1, backend=vllm)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("state/drill"), help="results, drill.md and drill.json (default state/drill)"
    )


def backends(chosen: list[str] | None) -> tuple[str, ...] | None:
    """--backend: None when not given (the plan's serve engine), () for `none`."""
    return None if chosen is None else tuple(dict.fromkeys(b for b in chosen if b != "none"))


def run_drill_command(args: argparse.Namespace) -> int:
    from quantgate.nightly.drill import DrillRequest, run_drill, table, write_outcome
    from quantgate.nightly.serving import ServerFailure

    for option in ("runs", "threads"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise InputError(f"--{option} must be at least 1, got {value}")
    request = DrillRequest(
        plan_path=args.plan.resolve(), out=args.out.resolve(), runs=args.runs, threads=args.threads,
        dtype=args.dtype, suites=tuple(args.suite), backends=backends(args.backend), conditions=tuple(args.condition),
        toolcall_mode=args.toolcall_mode,
    )  # fmt: skip
    try:
        outcome = run_drill(request)
    except ServerFailure as failure:  # the backend condition's server failed to start or died
        print(f"drill incomplete: {failure}", file=sys.stderr)
        return 3
    print(table(outcome), end="")
    print(f"written: {write_outcome(outcome, request)}")
    alarms = sum(len(reasons) for reasons in outcome.reasons.values())
    print(f"false alarms: {alarms}")
    for (metric, gate), reasons in outcome.reasons.items():
        print("".join(f"  {metric} {gate}: {reason}\n" for reason in reasons), end="")
    return 1 if alarms else 0
