"""`quantgate compare` (a table read back from MLflow) and `quantgate sync` (upload the outbox)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from quantgate.core.errors import InputError

if TYPE_CHECKING:
    from quantgate.tracking.store import TrackingStore

URI_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the embedded store state/mlflow.db)"


def _store(uri: str | None) -> TrackingStore:
    from quantgate.tracking.store import reachable, resolve_store

    store = resolve_store(uri)
    if not reachable(store):
        raise InputError(f"tracking server {store.uri}: unreachable")
    return store


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--nightly", metavar="ID",
        help="a nightly, by its id (as report --nightly) or its parent run's id: every variant against its baseline",
    )
    which.add_argument(
        "--runs", nargs=2, metavar=("BASELINE_RUN", "RUN"), help="any two runs: the second against the first"
    )
    parser.add_argument(
        "--changes",
        action="store_true",
        help="with --nightly: changes since the previous passing nightly larger than 2 combined stderr",
    )
    parser.add_argument(
        "--trend", type=int, metavar="N", help="with --nightly: values over the plan's last N nightlies"
    )
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write the table as CSV")
    parser.add_argument("--tracking-uri", help=URI_HELP)


def run_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from quantgate.tracking import compare, history, names
    from quantgate.tracking.store import client

    if (args.changes or args.trend) and not args.nightly:
        raise InputError("--changes and --trend need --nightly")
    mlflow_client = client(_store(args.tracking_uri))
    if args.nightly:
        args.nightly = compare.nightly_run_id(mlflow_client, args.nightly)
        table = compare.nightly_table(mlflow_client, args.nightly)
    else:
        table = compare.runs_table(mlflow_client, *args.runs)
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_columns", None):
        print(table.to_string(float_format=lambda x: f"{x:.6g}"))
        if args.changes:
            previous = history.previous_passing(mlflow_client, args.nightly)
            if previous is None:
                print("\nno earlier passing nightly of this plan")
            else:
                moved = history.changes(mlflow_client, args.nightly, previous.info.run_id)
                flagged = moved[moved["flagged"]]
                since = previous.data.tags[names.TAG_NIGHTLY]
                print(f"\nchanges beyond noise since nightly {since}: {len(flagged)}")
                if len(flagged):
                    print(flagged.to_string(index=False, float_format=lambda x: f"{x:.6g}"))
        if args.trend:
            plan = compare.get_run(mlflow_client, args.nightly).data.tags[names.TAG_PLAN]
            print(f"\nlast {args.trend} nightlies of {plan}:")
            print(
                history.trends(mlflow_client, plan, args.trend).to_string(float_format=lambda x: f"{x:.6g}")
            )
    if args.csv:
        table.to_csv(args.csv)
    return 0


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help=URI_HELP)


def run_sync(args: argparse.Namespace) -> int:
    from quantgate.tracking.publish import sync
    from quantgate.tracking.store import resolve_store

    outcome = sync(resolve_store(args.tracking_uri))
    print(outcome.message)
    return 0 if outcome.remaining == 0 and outcome.acceptances_synced else 1
