"""A second nightly with nothing changed, against the first: the resume/reuse benchmark.

    python bench/nightly_rerun.py [--plan plans/nightly.yaml] [--keep] [--record]

Both run `quantgate nightly` as a user would (a fresh process each), in one fresh state directory
and baseline cache, with the embedded MLflow store: the first builds every variant and measures
every pair; the second (another nightly id, same inputs) reuses the checkpoints and the results and
only logs and reports. Prints both wall times and the ratio (target: at most 0.10).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import Table, add_record_argument, start_recording

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: the plan failed its gates, which is a result
        sys.exit(f"nightly failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", type=Path, default=ROOT / "plans" / "nightly.yaml")
    parser.add_argument("--keep", action="store_true", help="keep the state directory (printed)")
    add_record_argument(parser)
    args = parser.parse_args()
    recording = start_recording("nightly_rerun", args.record) if args.record else None
    work = Path(tempfile.mkdtemp(prefix="quantgate-rerun-"))
    env = os.environ | {
        "QUANTGATE_STATE_DIR": str(work / "state"),
        "QUANTGATE_CACHE": str(work / "cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    base = [sys.executable, "-m", "quantgate.cli", "nightly", "--plan", str(args.plan)]
    base += ["--reports", str(work / "reports")]
    first, out_first = run(base + ["--nightly-id", "bench-first"], env)
    second, out_second = run(base + ["--nightly-id", "bench-second"], env)
    print(out_first.strip().splitlines()[-1], "|", out_second.strip().splitlines()[-1])
    print(f"plan {args.plan}; {os.cpu_count()} CPUs; load average at end {os.getloadavg()[0]:.1f}")
    print(f"first nightly (builds, measures, logs, reports): {first:8.1f} s")
    print(f"second nightly, nothing changed (reuses):       {second:8.1f} s")
    print(f"ratio second / first: {second / first:.3f} (target <= 0.10)")
    if recording:
        verdicts = (out_first.strip().splitlines()[-1], out_second.strip().splitlines()[-1])
        rows = [
            ("first nightly (builds, measures, logs, reports)", f"{first:.1f}", verdicts[0]),
            ("second nightly, nothing changed (reuses)", f"{second:.1f}", verdicts[1]),
            ("ratio second / first (target <= 0.10)", f"{second / first:.3f}", ""),
        ]
        title = f"plan {args.plan.name}, fresh state directory and baseline cache"
        table = Table(title, ("run", "wall s", "last line"), rows)
        data = {"plan": str(args.plan), "first_s": first, "second_s": second, "last_lines": verdicts}
        recording.write([table], data=data)
    if args.keep:
        print(f"kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
