"""report.md and a self-contained report.html (inline CSS, figures as base64 PNG) from ReportData."""

from __future__ import annotations

import base64
import html
import re

from quantgate.gates.render import detectable
from quantgate.gates.render import markdown as gates_markdown
from quantgate.report.data import ReportData, headline_columns


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


def _variant_table(data: ReportData) -> tuple[list[str], list[list[str]]]:
    """What each checkpoint is: scheme, origin, group, outcome, size."""
    header = ["variant", "scheme", "origin", "group", "outcome", "size / BF16", "bits/weight"]
    rows = [["BF16 (baseline)", "bf16", data.plan.model.name, "–", "–", "1", "16"]]
    for v in data.variants:
        size = v.checkpoint_bytes / data.baseline_bytes if v.checkpoint_bytes and data.baseline_bytes else None
        rows.append([v.name + (" (canary)" if v.canary else ""), v.scheme, v.origin, v.group, v.outcome, _fmt(size),
                     _fmt(v.bits_per_weight)])  # fmt: skip
    return header, rows


def _suite_tables(data: ReportData) -> list[tuple[str, list[str], list[list[str]]]]:
    """One narrow table per suite: its headline metrics (quantgate.core.headline), each variant's value
    with its recovery against BF16 in brackets; tables, not one wide row, so that they fit a laptop."""
    tables = []
    for suite, names in headline_columns(data):
        rows = [["BF16 (baseline)"] + [_fmt(m.value if (m := data.baseline_metric(suite, n)) else None) for n in names]]
        for v in data.variants:
            cells = [v.name + (" (canary)" if v.canary else "")]
            for name in names:
                metric, recovered = data.metric(v.checkpoint, suite, name), data.recovery_pct(v.checkpoint, suite, name)
                text = _fmt(metric.value if metric else None)
                cells.append(text + (f" ({recovered:.1f} %)" if recovered is not None and metric in (
                    data.results[(v.checkpoint, suite)].metrics) else ""))  # fmt: skip
            rows.append(cells)
        tables.append((suite, ["variant", *names], rows))
    return tables


def _changes_rows(data: ReportData) -> list[list[str]]:
    frame = data.changes
    if frame is None or getattr(frame, "empty", True):
        return []
    flagged = frame[frame["flagged"]]
    return [
        [r.variant, r.metric, _fmt(r.previous), _fmt(r.current), f"{r.sigmas:.1f}", "worse" if r.worse else "better"]
        for r in flagged.itertuples()
    ]


def _header_lines(data: ReportData) -> list[str]:
    verdict = "PASS" if data.gates.passed else "FAIL"
    lines = [f"nightly {data.nightly_id}", f"plan {data.plan.name} (hash {data.plan.digest()[:12]})"]
    lines.append(f"verdict {verdict}")
    lines += [f"{k} {v}" for k, v in sorted(data.tags.items())]
    return lines


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows] + [""]


def markdown(data: ReportData, figures: list[tuple[str, str]]) -> str:
    header, rows = _variant_table(data)
    out = [f"# quantgate report: {data.plan.name} / {data.nightly_id}", ""]
    out += [f"- {line}" for line in _header_lines(data)] + [""]
    out += ["## Variants", ""] + _markdown_table(header, rows)
    for suite, suite_header, suite_rows in _suite_tables(data):
        out += [f"### {suite} (recovery against BF16 in brackets)", ""] + _markdown_table(suite_header, suite_rows)
    out += [gates_markdown(data.gates).replace("## quantgate gates", "## Gates"), ""]
    changes = _changes_rows(data)
    out += ["## Changes against the previous passing nightly", ""]
    if changes:
        out += ["| variant | metric | previous | current | sigmas | direction |", "|---|---|---|---|---|---|"]
        out += ["| " + " | ".join(row) + " |" for row in changes]
    else:
        out += [data.tracking_note or "No change larger than the measured noise."]
    out += ["", "## Figures", ""] + [f"- {title}: `{file}`" for title, file in figures] + [""]
    return "\n".join(out)


CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:13px;max-width:100%}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}th{white-space:nowrap}
th{background:#f2f2f2}.pass{color:#2a9d4b;font-weight:bold}.fail{color:#d1495b;font-weight:bold}
.caught{color:#7a5195;font-weight:bold}.MISSED{color:#ef8a17;font-weight:bold}.incomplete{color:#888}
.verdict{font-size:1.6em;padding:.3em .6em;border-radius:6px;display:inline-block;color:#fff}
.verdict.PASS{background:#2a9d4b}.verdict.FAIL{background:#d1495b}
figure{display:inline-block;margin:1em;vertical-align:top}figcaption{font-size:13px;color:#555}
img{max-width:100%}ul.reasons li{margin:.2em 0}
"""


def _breakable(text: str) -> str:
    """Escaped, with a soft break after each . / _ of a name (metric names are long), none in numbers."""
    escaped = html.escape(text)
    try:
        float(text)
    except ValueError:
        return re.sub(r"([./_])(?=[A-Za-z])", r"\1<wbr>", escaped)
    return escaped


def _table(header: list[str], rows: list[list[str]], classes: dict[int, bool] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            css = f' class="{html.escape(cell)}"' if classes and classes.get(index) else ""
            cells.append(f"<td{css}>{_breakable(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def html_page(data: ReportData, figures: list[tuple[str, bytes]]) -> str:
    verdict = "PASS" if data.gates.passed else "FAIL"
    header, rows = _variant_table(data)
    gate_rows = [
        [r.variant + (" (canary)" if r.canary else ""), r.metric, r.gate, _fmt(r.baseline), _fmt(r.value),
         _fmt(r.recovery_pct), f"{r.threshold:g}", detectable(r), r.verdict, r.reason]
        for r in data.gates.rows
    ]
    gate_header = ["variant", "metric", "gate", "baseline", "value", "recovery %", "threshold", "detectable", "verdict",
                   "reason"]
    changes = _changes_rows(data)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>quantgate {html.escape(data.plan.name)} {html.escape(data.nightly_id)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>quantgate report: {html.escape(data.plan.name)}</h1>",
        f"<div class='verdict {verdict}'>{verdict}</div>",
        "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in _header_lines(data)) + "</ul>",
        "<ul class='reasons'>" + "".join(f"<li>{html.escape(r)}</li>" for r in data.gates.reasons) + "</ul>",
        "<h2>Variants</h2>",
        _table(header, rows, {4: True}),
    ]
    for suite, suite_header, suite_rows in _suite_tables(data):
        parts += [f"<h3>{html.escape(suite)} <small>(recovery against BF16 in brackets)</small></h3>",
                  _table(suite_header, suite_rows)]  # fmt: skip
    parts.append("<h2>Figures</h2>")
    for title, png in figures:
        encoded = base64.b64encode(png).decode()
        parts.append(
            f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{encoded}'>"
            f"<figcaption>{html.escape(title)}</figcaption></figure>"
        )
    parts += ["<h2>Gates</h2>", _table(gate_header, gate_rows, {8: True})]
    if data.gates.warnings:
        parts.append("<ul class='reasons'>" + "".join(f"<li>⚠️ {html.escape(w)}</li>" for w in data.gates.warnings)
                     + "</ul>")
    parts.append("<h2>Changes against the previous passing nightly</h2>")
    if changes:
        parts.append(_table(["variant", "metric", "previous", "current", "sigmas", "direction"], changes))
    else:
        parts.append(f"<p>{html.escape(data.tracking_note or 'No change larger than the measured noise.')}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
