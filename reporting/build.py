"""Write a nightly's report folder: report.md, report.html (self-contained), gates.xml, figures/.

The folder is written under a temporary name beside its target and renamed into place, so a report
is complete or absent. With a tracking store, the report also shows the trends over the plan's last
nightlies and the changes against the previous passing nightly, read from MLflow.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from gates.evaluate import GateReport
from gates.junit import write_junit
from gates.plan import Plan
from reporting.data import ReportData, gather
from reporting.plots import FIGURES
from reporting.render import html_page, markdown
from tracking.results import SuiteResult

if TYPE_CHECKING:
    from tracking.store import TrackingStore

TREND_NIGHTLIES = 10


def _history(data: ReportData, store: TrackingStore) -> None:
    """Trends and changes from MLflow; what could not be read is said in the report, not raised."""
    from tracking import names
    from tracking.history import changes, previous_passing, trends
    from tracking.log import find_runs
    from tracking.store import client, reachable

    if not reachable(store):
        data.tracking_note = f"tracking server {store.uri} unreachable: no history in this report"
        return
    mlflow = client(store)
    experiment = mlflow.get_experiment_by_name(names.experiment_name(data.plan.name))
    if experiment is None:
        data.tracking_note = "no nightly of this plan in MLflow yet"
        return
    data.trends = trends(mlflow, data.plan.name, TREND_NIGHTLIES)
    current = find_runs(mlflow, experiment.experiment_id, {names.TAG_KIND: names.KIND_NIGHTLY,
                                                           names.TAG_NIGHTLY: data.nightly_id})
    if not current:
        data.tracking_note = f"nightly {data.nightly_id} is not in MLflow yet: no comparison with earlier ones"
        return
    data.tags = {k.removeprefix("quantgate."): v for k, v in current[0].data.tags.items()
                 if k in (names.TAG_GIT, names.TAG_VERSION, names.TAG_HARDWARE, names.TAG_DATE)}
    previous = previous_passing(mlflow, current[0].info.run_id)
    if previous is None:
        data.tracking_note = "no earlier passing nightly of this plan to compare with"
        return
    data.changes = changes(mlflow, current[0].info.run_id, previous.info.run_id)
    earlier = previous.data.tags.get(names.TAG_NIGHTLY, previous.info.run_id)
    data.tracking_note = f"no change larger than 2 combined standard errors since nightly {earlier}"


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def write_report(
    folder: Path,
    plan: Plan,
    results: list[SuiteResult],
    gates: GateReport,
    nightly_id: str,
    store: TrackingStore | None,
) -> list[Path]:
    """Write the report folder; returns its files (report.md and report.html first)."""
    data = gather(plan, results, gates, nightly_id)
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
    folder.parent.mkdir(parents=True, exist_ok=True)
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return [folder / "report.md", folder / "report.html", folder / "gates.xml"] + [folder / f for f in files]
