"""`quantgate accept`: make a nightly the history gates' reference for some of its variants, with a reason
(tracking/acceptance.py). Written to MLflow when the nightly is logged there and the server answers, and
to the local nightly store when the nightly is kept there; an input error when it is in neither."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from quantgate.core.errors import InputError

if TYPE_CHECKING:
    from quantgate.plan import Plan

URI_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else state/mlflow.db)"


def add_accept_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, metavar="FILE", help="the plan (YAML)")
    parser.add_argument("--nightly", required=True, metavar="ID", help="the nightly whose values are intended")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME",
        help="accept this variant of the plan (repeatable; default: every variant the nightly measured)",
    )  # fmt: skip
    parser.add_argument("--reason", required=True, help="why the change is intended (shown beside every gate)")
    parser.add_argument("--tracking-uri", help=URI_HELP)


def _checkpoints(plan: Plan, names: list[str], measured: set[str], nightly: str) -> tuple[list[str], list[str]]:
    """(checkpoints, variant names) accepted: the named variants, else every one the nightly measured."""
    if names:
        variants = [plan.variant(n) for n in names]  # an unknown name: an input error listing the plan's
    else:
        variants = [v for v in plan.variants if plan.checkpoint_name(v) in measured]
    chosen = [(plan.checkpoint_name(v), v.name) for v in variants]
    if missing := [name for checkpoint, name in chosen if checkpoint not in measured]:
        raise InputError(f"--variant: nightly {nightly} has no results of {', '.join(missing)}")
    if not chosen:
        raise InputError(f"nightly {nightly}: none of the plan's variants was measured in it")
    return [c for c, _ in chosen], [n for _, n in chosen]


def run_accept(args: argparse.Namespace) -> int:
    from quantgate.plan import load_plan
    from quantgate.tracking import acceptance, names
    from quantgate.tracking.compare import children
    from quantgate.tracking.history import nightlies
    from quantgate.tracking.ledger import entries, entry_id, ledger_dir
    from quantgate.tracking.outbox import read
    from quantgate.tracking.store import client, reachable, resolve_store, state_dir

    plan = load_plan(args.plan)
    store, state = resolve_store(args.tracking_uri), state_dir()
    local = next((e for e in entries(state, plan.name) if entry_id(e) == args.nightly), None)
    parent, runs, online = None, {}, reachable(store)
    mlflow = client(store) if online else None
    if mlflow is not None:
        logged = nightlies(mlflow, plan.name)
        parent = next((r for r in logged if r.data.tags.get(names.TAG_NIGHTLY) == args.nightly), None)
        if parent is not None:
            runs = {r.data.tags[names.TAG_CHECKPOINT]: r for r in children(mlflow, parent)}
    if parent is None and local is None:
        raise InputError(
            f"--nightly {args.nightly}: no nightly of plan {plan.name} with this id in MLflow {store.uri}"
            f"{'' if online else ' (unreachable)'} nor in the local nightly store {ledger_dir(state, plan.name)}"
        )
    measured = set(runs) if parent is not None else {r.variant for r in read(local).results}
    checkpoints, variants = _checkpoints(plan, args.variant, measured, args.nightly)
    accepted = acceptance.new_acceptance(args.nightly, checkpoints, variants, args.reason)
    written = []
    if parent is not None:
        acceptance.write_run(mlflow, parent, runs, [accepted])
        written.append(f"MLflow {store.uri} (run {parent.info.run_id})")
    if local is not None:
        written.append(f"local nightly store {acceptance.write_local(local, accepted)}")
    print(f"nightly {args.nightly} is the history reference of {', '.join(variants)} in plan {plan.name}, "
          f"{accepted.describe()}")  # fmt: skip
    print("recorded in " + "; ".join(written))
    if parent is None and online:
        print(f"not in MLflow {store.uri} yet: `quantgate sync` uploads it; history lookups from this state folder "
              "honour the acceptance meanwhile")  # fmt: skip
    return 0
