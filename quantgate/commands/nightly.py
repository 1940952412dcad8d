"""`quantgate nightly`: the main job. Exit 0 when the plan passes, 1 when it fails, 2 on bad input, 3 when
a checkpoint's server failed (serve mode: finished pairs are kept; a rerun measures the rest)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from quantgate.core.errors import InputError
from quantgate.core.paths import path_component


def add_nightly_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, metavar="FILE", help="the plan (YAML)")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else state/mlflow.db)"
    )
    parser.add_argument("--nightly-id", help="the nightly's id (default: <date>-<plan hash>); shards share it")
    parser.add_argument(
        "--shard", default="1/1", metavar="I/N", help="run the I-th of N slices of the (variant, suite) matrix"
    )
    parser.add_argument(
        "--reports", type=Path, default=Path("reports"), help="reports root: REPORTS/<plan>/<nightly id>/"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for evaluation")
    parser.add_argument(
        "--workers", type=int, default=None,
        help="shards quantized in parallel per variant (threads; default: CPUs), as quantize --workers"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="baseline cache (default: ~/.cache/quantgate/baselines)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the servers it would start and the pairs; run nothing"
    )
    in_process = parser.add_argument_group("in-process measurement (over the plan's in_process)")
    in_process.add_argument("--device", help="torch device (cpu, cuda, cuda:1)")
    in_process.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype")
    in_process.add_argument("--device-map", help="accelerate device map, e.g. auto: the model over every visible GPU")


def run_nightly_command(args: argparse.Namespace) -> int:
    from harness.cli import default_cache_dir
    from quantgate.nightly.matrix import parse_shard
    from quantgate.nightly.run import NightlyRequest, run_nightly
    from quantgate.nightly.serving import MeasurementIncomplete
    from quantgate.tracking.store import state_dir

    for option in ("threads", "workers"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise InputError(f"--{option} must be at least 1, got {value}")
    if args.nightly_id is not None:  # names the report's folder
        path_component(args.nightly_id, file="--nightly-id", field="nightly id")
    shard = parse_shard(args.shard)
    overrides = {k: v for k in ("device", "dtype", "device_map") if (v := getattr(args, k)) is not None}
    request = NightlyRequest(
        plan_path=args.plan.resolve(),
        shard=shard,
        state=state_dir(),
        reports=args.reports.resolve(),
        cache_dir=args.cache_dir or default_cache_dir(),
        tracking_uri=args.tracking_uri,
        nightly_id=args.nightly_id,
        threads=args.threads,
        workers=args.workers or os.cpu_count() or 1,
        in_process=overrides or None,
        dry_run=args.dry_run,
    )
    try:
        outcome = run_nightly(request)
    except MeasurementIncomplete as incomplete:  # servers that failed; every finished pair is kept
        for failure in incomplete.failures:
            print(f"not measured: {failure}")
        print(f"nightly incomplete: {incomplete}")
        return 3
    if args.dry_run:
        print("\n".join(outcome))
        return 0
    print(f"nightly {outcome.nightly_id}: {outcome.measured} pair(s) measured, {len(outcome.results)} result(s)")
    print(outcome.tracking_message)
    if outcome.gates is None:
        print(
            f"shard {shard} done; when every shard has finished: "
            f"quantgate report --plan {args.plan} --nightly {outcome.nightly_id}"
        )
        return 0
    for reason in outcome.gates.reasons:
        print(f"  {reason}")
    for warning in outcome.gates.warnings:  # thresholds finer than their gate can detect
        print(f"  warning: {warning}")
    print(f"report: {outcome.report_dir / 'report.html'}")
    print(f"verdict: {'PASS' if outcome.gates.passed else 'FAIL'}")
    return 0 if outcome.gates.passed else 1
