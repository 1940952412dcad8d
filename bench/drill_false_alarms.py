"""`quantgate drill` on a plan, recorded: each gate's false alarms under repeat / other threads / batch 1
(/ backend=vllm: the copy through a vLLM server against the served baseline),
on every gated suite of the plan (latency: the baseline timed beside itself, with candidate speedup gates).

    python bench/drill_false_alarms.py [--plan plans/nightly.yaml] [--suite perplexity ...] [--runs 2]
                                       [--dtype float32] [--threads T] [--backend vllm] [--toolcall-mode chat|raw]
                                       [--name drill_false_alarms_float32]
                                       [--record [DIR]]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.record import Table, add_record_argument, start_recording  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=ROOT / "plans" / "nightly.yaml")
    parser.add_argument("--suite", action="append", default=[], help="drill this suite only (repeatable)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, help="the reference's CPU threads (default: torch's)")
    parser.add_argument("--backend", action="append", default=None, choices=["vllm", "none"],
                        help="also measure the copy through this engine's server (default: the plan's serve engine)")
    parser.add_argument("--toolcall-mode", choices=["chat", "raw"], help="the backend condition's tool-call mode")
    parser.add_argument("--condition", action="append", default=[], help="this condition only (repeatable)")
    parser.add_argument("--name", help="the record's file name (default: drill_false_alarms_<dtype>)")
    add_record_argument(parser)
    args = parser.parse_args()
    name = args.name or f"drill_false_alarms_{args.dtype}"
    recording = start_recording(name, args.record) if args.record else None

    from quantgate.commands.drill import backends
    from quantgate.nightly.drill import DrillRequest, rate_columns, rows, run_drill, speedup_table, table, targets

    with tempfile.TemporaryDirectory() as tmp:
        request = DrillRequest(
            args.plan.resolve(), Path(tmp), args.runs, args.threads, dtype=args.dtype, suites=tuple(args.suite),
            backends=backends(args.backend), conditions=tuple(args.condition), toolcall_mode=args.toolcall_mode,
        )
        outcome = run_drill(request)
    print(table(outcome), end="")
    print(speedup_table(outcome), end="")
    if recording:
        notes = [f"{m} {g}: {r}" for (m, g), reasons in outcome.reasons.items() for r in reasons] or ["no false alarm"]
        columns = ("metric", "gate", *outcome.conditions, *rate_columns(outcome))
        tables = [Table("false alarms / runs", columns, tuple(rows(outcome, dash="–")))]
        notes.insert(0, targets(outcome))
        if outcome.speedups:
            columns = ("speedup, baseline beside itself: geometric mean [95 % interval]",
                       *(f"run {i + 1}" for i in range(outcome.runs)))  # fmt: skip
            padded = ((k, *v, *[""] * (outcome.runs - len(v))) for k, v in outcome.speedups.items())
            tables.append(Table("latency side by side", columns, tuple(padded)))
        recording.write(
            tables,
            data={"plan": str(args.plan), "suites": args.suite, "runs": args.runs, "dtype": args.dtype,
                  "threads": args.threads, "backends": args.backend, "conditions": args.condition,
                  "toolcall_mode": args.toolcall_mode, "nondeterministic": outcome.nondeterministic,
                  "speedups": outcome.speedups},  # fmt: skip
            notes=notes,
        )


if __name__ == "__main__":
    main()
