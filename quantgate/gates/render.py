"""A GateReport as text: a fixed-width table for the terminal and Markdown for a CI job summary.

`detectable` is the smallest regression the row could detect with 80 % power (gates/power.py); a history
row's threshold shows the previous passing nightly's value.

Numbers are formatted for reading only; verdicts were decided on the exact values (gates/evaluate.py),
and each row's reason carries the exact numbers compared.
"""

from __future__ import annotations

import dataclasses
import json

from quantgate.gates.evaluate import GateReport, GateRow

COLUMNS = ("variant", "metric", "gate", "baseline", "value", "recovery %", "threshold", "detectable", "verdict")


def _number(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def _threshold(row: GateRow) -> str:
    if row.gate == "history":
        return f"vs {_number(row.previous)}, p<{row.threshold:g}"
    return f"p<{row.threshold:g}" if row.gate == "no_significant_regression" else f"{row.threshold:.6g}"


def detectable(row: GateRow) -> str:
    """The smallest regression the row could detect with 80 % power (metric units)."""
    return "-" if row.detectable is None else f"{row.detectable:.3g}"


def _cells(row: GateRow) -> tuple[str, ...]:
    variant = f"{row.variant} (canary)" if row.canary else row.variant
    return (
        variant,
        row.metric,
        row.gate,
        _number(row.baseline),
        _number(row.value),
        _number(row.recovery_pct),
        _threshold(row),
        detectable(row),
        row.verdict.upper(),
    )


def _verdict_line(report: GateReport) -> str:
    return f"plan {report.plan}: {'PASS' if report.passed else 'FAIL'}"


def text_table(report: GateReport) -> str:
    body = [COLUMNS, *(_cells(row) for row in report.rows)]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in body]
    failing = [f"  {row.name}: {row.reason}" for row in report.rows if row.verdict != "pass"]
    return "\n".join(
        lines
        + ([""] + ["not passing:"] + failing if failing else [])
        + ([""] + ["warnings (threshold finer than the gate can detect):"] + [f"  {w}" for w in report.warnings]
           if report.warnings else [])
        + [""]
        + [f"  {reason}" for reason in report.reasons]
        + [_verdict_line(report)]
    )


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def markdown(report: GateReport) -> str:
    icon = {"pass": "✅", "fail": "❌", "missing": "⚠️"}
    header = [f"## quantgate gates: {report.plan} — {'PASS ✅' if report.passed else 'FAIL ❌'}", ""]
    header += [f"- {_escape(reason)}" for reason in report.reasons] + [""]
    header += [f"- ⚠️ {_escape(warning)}" for warning in report.warnings] + ([""] if report.warnings else [])
    table = [
        "| " + " | ".join(COLUMNS) + " | reason |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for row in report.rows:
        cells = list(_cells(row))
        cells[-1] = f"{icon[row.verdict]} {row.verdict}"
        table.append("| " + " | ".join(_escape(c) for c in cells + [row.reason]) + " |")
    return "\n".join(header + table) + "\n"


def gates_json(report: GateReport) -> str:
    """The report as JSON: plan, verdict, reasons, warnings and every row with all its fields."""
    return json.dumps(dataclasses.asdict(report), indent=2, sort_keys=True) + "\n"
