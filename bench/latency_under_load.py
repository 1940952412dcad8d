"""The latency suite, variant beside baseline, run twice: idle, then with a CPU hog for part of the time.

The hog is `python -c 'while 1: pass'`, started HOG_START seconds into the second run and killed
HOG_SECONDS later. Side by side, baseline and variant share every disturbance of a pair, so each
speedup of the loaded run must stay within BAND (relative) of the idle run's, or be reported as
unstable (pair ratios' coefficient of variation above the suite's max_cv, after its retries); a
tenfold artifact like a baseline timed alone under load must never appear as a number.

Usage: python bench/latency_under_load.py --variant DIR [--baseline models/kimi-k2-tiny]
           [--suite suites/latency.yaml] [--threads 1] [--hog-start 30] [--hog-seconds 120] [--record [DIR]]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from record import Table, add_record_argument, start_recording

ROOT = Path(__file__).resolve().parents[1]
BAND = 0.25  # |loaded / idle - 1| allowed for a speedup reported as a number in both runs


def run_eval(variant: Path, baseline: Path, suite: Path, threads: int, out: Path) -> dict[str, dict]:
    from harness.evaluate import EvalRequest, evaluate

    request = EvalRequest(
        models=[variant], baseline=baseline, suites=[str(suite)], out=out, cache_dir=out / "cache", threads=threads
    )
    evaluate(request)
    summary = json.loads((out / variant.name / "latency" / "summary.json").read_text())
    return {m["name"]: m for m in summary["comparison"]} | {"_side_by_side": summary["details"]["side_by_side"]}


def with_hog(start: float, seconds: float, function, *args):
    """Run function(*args) while a CPU hog runs from `start` s for `seconds` s. Returns (value, hog window)."""
    window: dict[str, float] = {}
    t0 = time.monotonic()

    def hog() -> None:
        time.sleep(start)
        process = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
        window["start_s"] = time.monotonic() - t0
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        window["stop_s"] = time.monotonic() - t0

    thread = threading.Thread(target=hog, daemon=True)
    thread.start()
    value = function(*args)
    window["run_s"] = time.monotonic() - t0
    thread.join()
    return value, window


def cell(metrics: dict, phase: str, condition: str) -> tuple[float | None, str]:
    if f"unstable_{phase}.{condition}" in metrics:
        return None, "unstable (" + metrics[f"unstable_{phase}.{condition}"]["unit"] + ")"
    value = metrics[f"speedup_{phase}.{condition}"]["value"]
    low, high = (
        metrics[f"speedup_{phase}_low.{condition}"]["value"],
        metrics[f"speedup_{phase}_high.{condition}"]["value"],
    )
    return value, f"{value:.3f} [{low:.3f}, {high:.3f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", type=Path, required=True)
    parser.add_argument("--baseline", type=Path, default=ROOT / "models" / "kimi-k2-tiny")
    parser.add_argument("--suite", type=Path, default=ROOT / "suites" / "latency.yaml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hog-start", type=float, default=30.0)
    parser.add_argument("--hog-seconds", type=float, default=120.0)
    add_record_argument(parser)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    recording = start_recording("latency_under_load", args.record) if args.record else None
    with tempfile.TemporaryDirectory() as tmp:
        idle = run_eval(args.variant, args.baseline, args.suite, args.threads, Path(tmp) / "idle")
        loaded, window = with_hog(
            args.hog_start,
            args.hog_seconds,
            run_eval,
            args.variant,
            args.baseline,
            args.suite,
            args.threads,
            Path(tmp) / "loaded",
        )
    conditions = sorted(
        {name.split(".", 1)[1] for name in idle if "." in name and name.startswith(("speedup_", "unstable_"))}
    )
    rows, outside = [], 0
    for condition in conditions:
        for phase in ("prefill", "decode"):
            (idle_value, idle_text), (loaded_value, loaded_text) = (
                cell(idle, phase, condition),
                cell(loaded, phase, condition),
            )
            change = None if idle_value is None or loaded_value is None else loaded_value / idle_value - 1
            within = None if change is None else abs(change) <= BAND
            outside += within is False
            rows.append(
                (condition, phase, idle_text, loaded_text, None if change is None else f"{100 * change:+.1f} %", within)
            )
    attempts = {"idle": idle["_side_by_side"]["attempts"], "loaded": loaded["_side_by_side"]["attempts"]}
    result = {"band": BAND, "hog": window, "attempts": attempts, "rows": rows, "outside_band": outside}
    print(json.dumps(result, indent=2))
    if recording:
        recording.write(
            [
                Table(
                    "speedup (variant / baseline throughput), side by side: geometric mean [95 % interval]",
                    ("condition", "phase", "idle", "CPU hog for part of the run", "change", f"within ±{BAND:.0%}"),
                    rows,
                ),
                Table(
                    "attempts per condition (retried when the pair ratios' CV exceeds max_cv)",
                    ("condition", "idle", "loaded"),
                    [(c, attempts["idle"][c], attempts["loaded"][c]) for c in sorted(attempts["idle"])],
                ),
            ],
            data=result,
            notes=[
                f"variant {args.variant.name} against {args.baseline.name}, suite {args.suite.name}, "
                f"{args.threads} thread(s); hog `python -c 'while 1: pass'` from {window['start_s']:.0f} s to "
                f"{window['stop_s']:.0f} s of a {window['run_s']:.0f} s run",
                "unstable: the pair ratios spread past the suite's max_cv after its retries; no number is given",
            ],
        )
    return 0 if outside == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
