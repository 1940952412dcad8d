"""`quantgate gate`: judge a nightly's results against its plan; exit 0 pass, 1 fail, 2 bad input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quantgate.errors import InputError


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


def run_gate(args: argparse.Namespace) -> int:
    from gates.evaluate import evaluate
    from gates.junit import write_junit
    from gates.plan import load_plan
    from gates.render import markdown, text_table
    from tracking.results import read_results

    if args.track and args.as_real:
        raise InputError("--as-real is a drill and is not recorded; drop --track")
    plan = load_plan(args.plan)
    results = [result for folder in args.results for result in read_results(folder)]
    report = evaluate(plan, results, tuple(args.as_real))
    print(text_table(report))
    if args.junit:
        write_junit(report, args.junit)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(report))
    if args.track:
        from tracking.publish import deliver
        from tracking.record import nightly_record
        from tracking.store import resolve_store

        record = nightly_record(plan, results, args.nightly_id, "pass" if report.passed else "fail")
        delivery = deliver(resolve_store(args.tracking_uri), record)
        print(delivery.message, file=sys.stderr if delivery.runs is None else sys.stdout)
    return 0 if report.passed else 1
