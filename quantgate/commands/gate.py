"""`quantgate gate`: judge a nightly's results against its plan; exit 0 pass, 1 fail, 2 bad input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quantgate.core.errors import InputError


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results",
        type=Path,
        action="append",
        required=True,
        metavar="DIR",
        help="a results folder (RESULTS/<checkpoint>/<suite>/summary.json); repeatable",
    )
    parser.add_argument("--plan", type=Path, required=True, metavar="FILE", help="the plan (YAML)")
    parser.add_argument(
        "--junit", type=Path, metavar="FILE", help="write JUnit XML: one testcase per gate row"
    )
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="write a Markdown summary (CI job summary)"
    )
    parser.add_argument(
        "--as-real",
        action="append",
        default=[],
        metavar="VARIANT",
        help="gate this (canary) variant as a real one: a drill that must fail; repeatable",
    )
    parser.add_argument(
        "--track",
        action="store_true",
        help="record the results and the verdict in MLflow (outbox if the server is down)",
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else state/mlflow.db)"
    )
    parser.add_argument("--nightly-id", help="the nightly's id for --track (default: <date>-<plan hash>)")
    parser.add_argument(
        "--require-all", action="store_true",
        help="fail variants of the plan that have no results (default: name them as missing, judge the rest)",
    )


def run_gate(args: argparse.Namespace) -> int:
    from quantgate.core.record import read_results
    from quantgate.finish import finish
    from quantgate.gates.junit import write_junit
    from quantgate.gates.render import markdown, text_table
    from quantgate.plan import load_plan
    from quantgate.tracking.nightly_record import default_nightly_id
    from quantgate.tracking.store import resolve_store

    if args.track and args.as_real:
        raise InputError("--as-real is a drill and is not recorded; drop --track")
    plan = load_plan(args.plan)
    results = [result for folder in args.results for result in read_results(folder)]
    store = resolve_store(args.tracking_uri) if args.track else None
    nightly_id = args.nightly_id or default_nightly_id(plan)
    finished = finish(
        plan, results, nightly_id, store=store, as_real=tuple(args.as_real), require_all=args.require_all
    )
    report = finished.gates
    print(text_table(report))
    if report.missing:
        print(f"not measured, not judged: {', '.join(report.missing)} (--require-all fails them)")
    if args.junit:
        write_junit(report, args.junit)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(report))
    if finished.delivery is not None:
        delivery = finished.delivery
        print(delivery.message, file=sys.stderr if delivery.runs is None else sys.stdout)
    return 0 if report.passed else 1
