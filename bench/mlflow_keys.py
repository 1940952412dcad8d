"""How many MLflow metric keys and tags one nightly makes: the layout before the metrics tables
(every metric a key, with .stderr, .delta and .recovery_pct keys and a direction and unit tag per
key) against the current one (headline keys and their recovery; everything else in one table per
suite), counted on a nightly's real results.

The current layout is counted by logging the nightly to a fresh embedded MLflow store and reading
the runs back; the earlier one is computed from the same results by its rule (tracking/log.py before
commit ec49d71), written out below, since its code is gone.

Usage: python bench/mlflow_keys.py --plan plans/nightly.yaml --results state/results [--record [DIR]]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from record import Table, add_record_argument, start_recording

SYSTEM_TAG = "mlflow."  # MLflow's own tags (run name, user, source, ...): the same in both layouts


def legacy_counts(result, baseline) -> tuple[int, int]:
    """(metric keys, tags) the earlier layout logged for one suite result."""
    from quantgate.gates.evaluate import recovery

    keys = tags = 0
    measured = [(m, baseline.metric(m.name) if baseline else None) for m in result.metrics]
    for metric, base in measured + [(m, None) for m in result.comparison or []]:
        keys += 1 + (metric.stderr is not None)
        tags += 1 + bool(metric.unit)  # direction, unit
        if base is not None and result is not baseline:
            keys += 1 + (recovery(metric, base) is not None)  # delta, recovery_pct
    return keys, tags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True, help="the nightly's results (state/results)")
    add_record_argument(parser)
    args = parser.parse_args()
    recording = start_recording("mlflow_keys", args.record) if args.record else None
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    from quantgate.core.record import read_results
    from quantgate.gates.evaluate import evaluate
    from quantgate.plan import load_plan
    from quantgate.tracking.log import log_nightly
    from quantgate.tracking.nightly_record import nightly_record
    from quantgate.tracking.store import TrackingStore

    plan = load_plan(args.plan)
    results = read_results(args.results)
    gates = evaluate(plan, results, require_all=False)
    record = nightly_record(plan, results, "keys", "pass" if gates.passed else "fail", gates.passing)
    baselines = {r.suite: r for r in record.results if r.role == "baseline"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = TrackingStore(f"sqlite:///{tmp}/mlflow.db", Path(tmp) / "artifacts")
        client = MlflowClient(tracking_uri=store.uri)
        runs = log_nightly(client, store, record)
        for info in record.checkpoints:
            run_id = runs.child_run_ids.get(info.checkpoint)
            if run_id is None:
                continue
            run = client.get_run(run_id)
            before = [legacy_counts(r, baselines.get(r.suite)) for r in record.results if r.variant == info.checkpoint]
            own_tags = [t for t in run.data.tags if not t.startswith(SYSTEM_TAG)]
            legacy_tags = sum(t for _, t in before) + len([t for t in own_tags if not t.startswith("quantgate.step")])
            rows.append((info.variant, sum(k for k, _ in before), len(run.data.metrics), legacy_tags, len(own_tags)))
    total = ("all runs", *(sum(row[i] for row in rows) for i in range(1, 5)))
    columns = ("run", "keys before", "keys now", "tags before", "tags now")
    for row in [*rows, total]:
        print("  ".join(str(cell).ljust(24 if i == 0 else 12) for i, cell in enumerate(row)))
    if recording:
        recording.write(
            [Table(f"MLflow metric keys and quantgate tags per run, plan {plan.name}", columns, [*rows, total])],
            data={"plan": str(args.plan), "results": str(args.results), "rows": rows},
            notes=["tags: quantgate's own (kind, nightly, plan, variant, checkpoint, logged.<suite>, ...), "
                   "not MLflow's system tags (mlflow.*)"],
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
    sys.exit(main())
