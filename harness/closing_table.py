"""The table `quantgate eval` ends with: each model's headline numbers against the baseline.

Numbers are rounded for reading (4 significant digits); the result files hold them unrounded.
"""

from __future__ import annotations

from pathlib import Path

from quantgate.core.headline import headline_metrics
from quantgate.core.metrics import Metric
from quantgate.core.record import ResultRecord

COLUMNS = ("model", "suite", "metric", "value", "baseline", "change")


def _number(x: float) -> str:
    return f"{x:.4g}"


def _change(metric: Metric, base: Metric | None) -> str:
    if base is None:
        return ""
    delta = metric.value - base.value
    if delta == 0 or metric.direction == "none":
        return f"{delta:+.3g}"
    better = (delta > 0) == (metric.direction == "higher")
    return f"{delta:+.3g} ({'better' if better else 'worse'})"


def rows(records: list[ResultRecord]) -> list[tuple[str, ...]]:
    baselines = {r.suite: r for r in records if r.role == "baseline"}
    out = []
    for record in sorted(records, key=lambda r: (r.role != "baseline", r.variant, r.suite)):
        kind = str(record.suite_config.get("kind", record.suite))
        base = baselines.get(record.suite) if record.role != "baseline" else None
        for metric in headline_metrics(kind, record.metrics, record.comparison):
            reference = base.metric(metric.name) if base is not None else None
            label = f"{record.variant} (baseline)" if record.role == "baseline" else record.variant
            out.append((
                label, record.suite, metric.name, _number(metric.value),
                _number(reference.value) if reference else "", _change(metric, reference),
            ))  # fmt: skip
    return out


def closing_table(records: list[ResultRecord], out: Path) -> str:
    table = [COLUMNS, *rows(records)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join([*lines, f"full results: {out}/<model>/<suite>/summary.json"])
