"""Write a nightly's report folder: report.md, report.html (self-contained), gates.xml, gates.json, figures/.

The folder is written under a temporary name beside its target and renamed into place, so a report
is complete or absent. With a tracking store, the report also shows the trends over the plan's last
nightlies and the changes against the previous passing nightly: earlier nightlies are read from
MLflow, this one from its records in hand (nothing is read back that this run wrote).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from quantgate.core.record import ResultRecord
from quantgate.gates.evaluate import GateReport
from quantgate.gates.junit import write_junit
from quantgate.gates.render import gates_json
from quantgate.plan import Plan
from quantgate.report.data import ReportData, gather
from quantgate.report.plots import FIGURES
from quantgate.report.render import html_page, markdown

if TYPE_CHECKING:
    from quantgate.tracking.store import TrackingStore

TREND_NIGHTLIES = 10


def _history(data: ReportData, store: TrackingStore) -> None:
    """Trends and changes against earlier nightlies in MLflow, this nightly's values from its records
    in hand (it is logged after its report); what could not be read is said in the report, not raised."""
    from mlflow.exceptions import MlflowException

    from quantgate.tracking.store import failure_reason, reachable

    if not reachable(store):
        data.tracking_note = f"tracking server {store.uri} unreachable: no history in this report"
        return
    try:
        _read_history(data, store)
    except (MlflowException, OSError) as error:  # a half-up server, a timeout: the report is still written
        data.tracking_note = f"tracking server {store.uri} failed ({failure_reason(error)}): no history in this report"


def _read_history(data: ReportData, store: TrackingStore) -> None:
    from quantgate.tracking import names
    from quantgate.tracking.history import (
        changes_between,
        logged_values,
        previous_passing_nightly,
        record_values,
        trends,
    )
    from quantgate.tracking.store import client

    mlflow = client(store)
    labels = {data.plan.checkpoint_name(v): v.name for v in data.plan.variants}
    current = record_values(list(data.results.values()), labels)
    data.trends = trends(mlflow, data.plan.name, TREND_NIGHTLIES, current=(data.nightly_id, current))
    previous = previous_passing_nightly(mlflow, data.plan.name, data.nightly_id)
    if previous is None:
        data.tracking_note = "no earlier passing nightly of this plan to compare with"
        return
    data.changes = changes_between(current, logged_values(mlflow, previous))
    earlier = previous.data.tags.get(names.TAG_NIGHTLY, previous.info.run_id)
    data.tracking_note = f"no change larger than 2 combined standard errors since nightly {earlier}"


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def write_report(
    folder: Path,
    plan: Plan,
    results: list[ResultRecord],
    gates: GateReport,
    nightly_id: str,
    store: TrackingStore | None,
    tags: dict[str, str] | None = None,
) -> list[Path]:
    """Write the report folder; returns its files (report.md and report.html first). `tags`: the
    nightly record's (git revision, version, hardware, date), shown in the report's header."""
    data = gather(plan, results, gates, nightly_id)
    data.tags = {key.removeprefix("quantgate."): value for key, value in (tags or {}).items()}
    if store is not None:
        _history(data, store)
    figures = [(title, png) for title, draw in FIGURES if (png := draw(data)) is not None]
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "figures").mkdir(parents=True)
    files = []
    for title, png in figures:
        name = f"figures/{_slug(title)}.png"
        (tmp / name).write_bytes(png)
        files.append(name)
    (tmp / "report.md").write_text(markdown(data, list(zip([t for t, _ in figures], files, strict=True))))
    (tmp / "report.html").write_text(html_page(data, figures))
    write_junit(gates, tmp / "gates.xml")
    (tmp / "gates.json").write_text(gates_json(gates))
    folder.parent.mkdir(parents=True, exist_ok=True)
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    written = ["report.md", "report.html", "gates.xml", "gates.json"]
    return [folder / name for name in written] + [folder / f for f in files]
