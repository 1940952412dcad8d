"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes.

Each function takes the gathered ReportData and returns None when it has nothing to draw (e.g. no
latency suite: no sizes). Canaries are drawn with hollow markers / hatched bars and labelled.
"""

from __future__ import annotations

import io
from fnmatch import fnmatchcase

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from quantgate.report.data import KL_PERCENTILES, ReportData, finite  # noqa: E402

# Paired differences (variant - BF16 on the same inputs, with the paired stderr) from each suite's comparison:
# perplexity's ln(PPL ratio), and every "<metric>_delta" of the benchmark (one per task) and tool-call suites.
DIFFERENCE_METRICS = (("perplexity", "ln_ppl_ratio"), ("benchmark", "*_delta"), ("toolcall", "task_success_delta"))
MARKERS = "osD^vP*Xhp<>"  # one per variant in the recovery-vs-size figure, named in its legend
LONGHORIZON_STEPS = 300  # the survival figure's horizon
LONGHORIZON_FLOOR = 1e-9  # its lowest probability drawn
COLOURS = {"pass": "#2a9d4b", "fail": "#d1495b", "caught": "#7a5195", "MISSED": "#ef8a17", "incomplete": "#888888",
           "not measured": "#bbbbbb"}  # fmt: skip


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def recovery_vs_size(data: ReportData) -> bytes | None:
    points = [
        (v, data.recovery_pct(v.checkpoint, "perplexity", "perplexity"), v.checkpoint_bytes)
        for v in data.variants
    ]
    points = [(v, r, s) for v, r, s in points if finite(r) and finite(s)]
    if not points or not data.baseline_bytes:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 4))
    for index, (variant, recovered, size) in enumerate(points):  # named in a legend: labels beside
        ratio = size / data.baseline_bytes  # close points (w8a16 and w3a16) overlapped
        face = "none" if variant.canary else COLOURS[variant.outcome]
        axes.scatter([ratio], [recovered], s=60, marker=MARKERS[index % len(MARKERS)], facecolors=face,
                     edgecolors=COLOURS[variant.outcome], linewidths=2,
                     label=f"{variant.name}{' (canary)' if variant.canary else ''}: {variant.outcome}")  # fmt: skip
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    axes.axhline(100, color="#999", linewidth=0.8, linestyle="--")
    axes.set_xlabel("checkpoint size / BF16")
    axes.set_ylabel("perplexity recovery % (BF16 = 100)")
    axes.set_title("Recovery against checkpoint size")
    axes.grid(alpha=0.3)
    return _png(figure)


def suite_differences(data: ReportData) -> bytes | None:
    panels = []
    for suite, pattern in DIFFERENCE_METRICS:
        compared = [r for (c, s), r in sorted(data.results.items()) if s == suite and r.comparison]
        names = dict.fromkeys(m.name for r in compared for m in r.comparison if fnmatchcase(m.name, pattern))
        for name in names:
            rows = [(v, data.metric(v.checkpoint, suite, name)) for v in data.variants]
            rows = [(v, m) for v, m in rows if m is not None]
            if rows:
                panels.append((f"{suite}.{name}", rows[0][1].direction, rows))
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels) + 1.5, 0.5 * len(data.variants) + 2),
                                squeeze=False, sharey=True)
    for ax, (title, direction, rows) in zip(axes[0], panels, strict=True):
        ax.barh([v.name for v, _ in rows], [m.value for _, m in rows],
                xerr=[1.96 * (m.stderr or 0.0) for _, m in rows], capsize=3,
                color=[COLOURS[v.outcome] for v, _ in rows])
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"{title}\n({direction} is better)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].invert_yaxis()
    figure.suptitle("Paired differences from BF16 on the same inputs, 95 % intervals", fontsize=10, y=1.02)
    figure.tight_layout()
    return _png(figure)


def kl_distribution(data: ReportData) -> bytes | None:
    lines = []
    for variant in data.variants:
        values = [data.metric(variant.checkpoint, "perplexity", name) for name in KL_PERCENTILES]
        if all(v is not None for v in values):
            lines.append((variant, [max(v.value, 1e-9) for v in values]))
    if not lines:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 4))
    for variant, values in lines:
        axes.plot(range(len(KL_PERCENTILES)), values, marker="o", label=variant.name,
                  linestyle="--" if variant.canary else "-")
    axes.set_xticks(range(len(KL_PERCENTILES)), [n.removeprefix("kl_") for n in KL_PERCENTILES])
    axes.set_yscale("log")
    axes.set_xlabel("percentile of per-token KL")
    axes.set_ylabel("KL(BF16 || variant), nats")
    axes.set_title("Per-token KL-divergence against BF16")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3, which="both")
    return _png(figure)


def routing_by_layer(data: ReportData) -> bytes | None:
    tables = [(v, data.by_layer(v.checkpoint, "routing_same_experts")) for v in data.variants]
    tables = [(v, t) for v, t in tables if t]
    if not tables:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 4))
    for variant, table in tables:
        axes.plot(list(table), [100 * x for x in table.values()], marker="o", label=variant.name,
                  linestyle="--" if variant.canary else "-")
    axes.set_xlabel("MoE layer")
    axes.set_xticks(sorted({layer for _, t in tables for layer in t}))
    axes.set_ylabel("tokens with the same expert set as BF16, %")
    axes.set_title("Routing agreement per MoE layer")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return _png(figure)


def toolcall_success(data: ReportData) -> bytes | None:
    names = [data.plan.baseline_name] + [v.checkpoint for v in data.variants]
    labels = ["BF16"] + [v.name for v in data.variants]
    bars = [(label, data.metric(c, "toolcall", "task_success")) for label, c in zip(labels, names, strict=True)]
    bars = [(label, m) for label, m in bars if m is not None]
    if not bars:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 0.35 * len(bars) + 1.4))  # names on the y axis: never overlap
    colours = ["#457b9d"] + [COLOURS[v.outcome] for v in data.variants]
    axes.barh([b[0] for b in bars], [b[1].value for b in bars],
              xerr=[1.96 * (b[1].stderr or 0) for b in bars], capsize=3, color=colours[: len(bars)])  # fmt: skip
    axes.invert_yaxis()
    axes.set_xlim(0, 1.05)
    axes.set_xlabel("task success (final state), share")
    axes.set_title("Multi-step tool-call success per variant")
    axes.tick_params(axis="y", labelsize=7)
    return _png(figure)


def longhorizon_survival(data: ReportData) -> bytes | None:
    """P(no disagreement with BF16 by step k) = (1 - p)^k from each variant's per-step disagreement rate p,
    the band from its Wilson 95 % interval; teacher-forced steps are independent trials."""
    lines = []
    for variant in data.variants:
        rate, low, high = (data.metric(variant.checkpoint, "longhorizon", name)
                           for name in ("disagreement_rate", "disagreement_rate_low", "disagreement_rate_high"))
        if rate is not None and low is not None and high is not None:
            lines.append((variant, rate.value, low.value, high.value, rate.n))
    if not lines:
        return None
    steps = list(range(LONGHORIZON_STEPS + 1))
    figure, axes = plt.subplots(figsize=(6.4, 4))
    for variant, rate, low, high, n in lines:
        label = f"{variant.name}{' (canary)' if variant.canary else ''}: p = {rate:.3f} ({n} steps)"
        line, = axes.plot(steps, [max((1 - rate) ** k, LONGHORIZON_FLOOR) for k in steps], label=label,
                          linestyle="--" if variant.canary else "-")
        axes.fill_between(steps, [max((1 - high) ** k, LONGHORIZON_FLOOR) for k in steps],
                          [max((1 - low) ** k, LONGHORIZON_FLOOR) for k in steps],
                          color=line.get_color(), alpha=0.12, linewidth=0)
    for k in (100, 200, 300):
        axes.axvline(k, color="#999", linewidth=0.6, linestyle=":")
    axes.set_yscale("log")  # (1 - p)^k is a straight line; BF16 against itself is 1
    axes.set_ylim(LONGHORIZON_FLOOR, 2)
    axes.set_xlabel("sequential tool-call steps k")
    axes.set_ylabel("P(no disagreement with BF16 by step k), log")
    axes.set_title("Long horizon: survival of agreement with BF16")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return _png(figure)


def trends(data: ReportData) -> bytes | None:
    table = data.trends
    if table is None or getattr(table, "empty", True) or len(table.index) < 2:
        return None
    metrics = [g.metric for g in data.plan.gates if g.metric in set(table.columns.get_level_values(1))]
    metrics = list(dict.fromkeys(metrics))[:4]
    if not metrics:
        return None
    figure, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics) + 2, 3.4), squeeze=False)
    variants = list(table.columns.get_level_values(0).unique())
    colours = dict(zip(variants, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4, strict=False))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for variant in variants:  # one colour per variant in every panel, whichever metrics it has
            if (variant, metric) in table.columns:
                ax.plot(range(len(table.index)), table[(variant, metric)].to_numpy(), marker="o", label=variant,
                        color=colours[variant])  # fmt: skip
        ax.set_title(metric, fontsize=8)
        ax.set_xticks(range(len(table.index)), [str(i)[-14:] for i in table.index], rotation=45, fontsize=6)
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}
    figure.legend(handles.values(), handles.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
                  frameon=False)  # beside the panels, never over a line  # fmt: skip
    figure.suptitle(f"Last {len(table.index)} nightlies", fontsize=10)
    figure.tight_layout()
    return _png(figure)


FIGURES = (
    ("Recovery against checkpoint size", recovery_vs_size),
    ("Per-suite differences from BF16", suite_differences),
    ("KL-divergence distribution", kl_distribution),
    ("Routing agreement per layer", routing_by_layer),
    ("Tool-call success per variant", toolcall_success),
    ("Long-horizon survival", longhorizon_survival),
    ("Trends", trends),
)
