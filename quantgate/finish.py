"""The end of every judging path (nightly, `report`, `gate --track`): gate the results, write the
report, and deliver the nightly record once, to MLflow or the outbox.

The report is written before the record is delivered, so the record carries it and MLflow (or the
outbox) receives everything in one delivery; nothing is read back from MLflow that this run wrote.
History gates compare with the previous passing nightly of the plan, looked up before this one is
delivered (tracking/ledger.py: MLflow, else the local nightly store); a delivered nightly is also kept
in the local nightly store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from quantgate.core.record import ResultRecord
from quantgate.gates.evaluate import GateReport
from quantgate.gates.evaluate import evaluate as evaluate_gates
from quantgate.plan import Plan
from quantgate.tracking.ledger import find_previous, remember
from quantgate.tracking.nightly_record import NightlyRecord, nightly_record
from quantgate.tracking.publish import Delivery, deliver
from quantgate.tracking.store import TrackingStore, state_dir


@dataclass(frozen=True)
class Finished:
    gates: GateReport | None  # None: a shard of a split nightly (gated once every shard has logged)
    record: NightlyRecord
    delivery: Delivery | None  # None: not delivered (asked not to)
    report_dir: Path | None


def finish(
    plan: Plan,
    results: list[ResultRecord],
    nightly_id: str,
    *,
    gate: bool = True,
    store: TrackingStore | None = None,
    deliver_record: bool = True,
    reports: Path | None = None,
    state: Path | None = None,
    as_real: tuple[str, ...] = (),
    require_all: bool = True,
) -> Finished:
    """Gate (unless `gate` is False), write the report under `reports/<plan>/<nightly id>/` (when
    `reports` is given), and deliver the record to `store` (when given and `deliver_record`)."""
    from quantgate.report.build import write_report

    history = None
    if gate and any(g.history is not None for g in plan.gates):
        history = find_previous(plan, nightly_id, store, state or state_dir())
    gates = evaluate_gates(plan, results, as_real, history, require_all) if gate else None
    verdict = None if gates is None else "pass" if gates.passed else "fail"
    record = nightly_record(plan, results, nightly_id, verdict, gates.passing if gates else None)
    report_dir = None
    if gates is not None and reports is not None:
        report_dir = reports / plan.name / nightly_id
        files = write_report(report_dir, plan, results, gates, nightly_id, store, record.tags)
        record = dataclasses.replace(record, report_files=files)
    delivery = deliver(store, record, state) if store is not None and deliver_record else None
    if delivery is not None and gates is not None and not as_real:
        remember(record, state or state_dir())
    return Finished(gates, record, delivery, report_dir)
