"""`quantgate report`: gate and report a nightly, from local results or from MLflow (split nightlies).

Exit 0 when the plan passes, 1 when it fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quantgate.core.errors import InputError
from quantgate.core.paths import path_component


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, metavar="FILE", help="the plan (YAML)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--nightly", metavar="ID", help="a nightly logged to MLflow (e.g. by every --shard)")
    source.add_argument(
        "--results", type=Path, action="append", metavar="DIR", help="local results (quantgate eval --out); repeatable"
    )
    parser.add_argument("--nightly-id", help="with --results: the report's id (default: local-<plan hash>)")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else state/mlflow.db)"
    )
    parser.add_argument(
        "--reports", type=Path, default=Path("reports"), help="reports root: REPORTS/<plan>/<nightly id>/"
    )
    parser.add_argument(
        "--require-all", action="store_true",
        help="fail variants of the plan that have no results (default: name them as missing, judge the rest)",
    )


def run_report(args: argparse.Namespace) -> int:
    from quantgate.core.record import read_results
    from quantgate.finish import finish
    from quantgate.plan import load_plan
    from quantgate.report.fetch import fetch_nightly
    from quantgate.tracking.store import resolve_store, state_dir

    if args.nightly and args.nightly_id:
        raise InputError("--nightly-id goes with --results; --nightly already names the nightly")
    for option in ("nightly", "nightly_id"):  # names the report's folder
        if getattr(args, option) is not None:
            path_component(getattr(args, option), file=f"--{option.replace('_', '-')}", field="nightly id")
    plan = load_plan(args.plan)
    store = resolve_store(args.tracking_uri)
    if args.nightly:
        nightly_id = args.nightly
        results = fetch_nightly(store, plan, nightly_id, state_dir() / "fetched" / nightly_id)
    else:
        nightly_id = args.nightly_id or f"local-{plan.digest()[:8]}"
        results = [result for folder in args.results for result in read_results(folder)]
    # --nightly: the whole nightly is known now; its verdict and report join its logged runs
    finished = finish(
        plan, results, nightly_id, store=store, deliver_record=bool(args.nightly), reports=args.reports.resolve(),
        require_all=args.require_all,
    )
    gates = finished.gates
    if finished.delivery is not None:
        print(finished.delivery.message)
    for reason in gates.reasons:
        print(f"  {reason}")
    if gates.missing:
        print(f"not measured, not judged: {', '.join(gates.missing)} (--require-all fails them)")
    print(f"report: {finished.report_dir / 'report.html'}")
    print(f"verdict: {'PASS' if gates.passed else 'FAIL'}")
    return 0 if gates.passed else 1
