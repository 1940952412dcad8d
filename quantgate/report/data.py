"""What a report shows, gathered once from the plan, the results and the gate report.

Everything the renderers and plots need is here, so they never read files or MLflow themselves.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from quantgate.core.checkpoint import stored_bits_per_weight, stored_size
from quantgate.core.headline import headline_metrics
from quantgate.core.metrics import Metric
from quantgate.core.record import ResultRecord
from quantgate.gates.evaluate import GateReport, recovery
from quantgate.plan import Plan

# The headline numbers of the per-variant table: (suite, metric), shown where measured.
KL_PERCENTILES = ("kl_median", "kl_p90", "kl_p99", "kl_p99.9", "kl_max")


@dataclass(frozen=True)
class VariantRow:
    name: str
    checkpoint: str
    scheme: str
    group: str
    canary: bool
    origin: str  # where the checkpoint came from (PlanVariant.origin)
    outcome: str  # pass / fail / caught (a canary failing a gate) / MISSED (one passing all) / incomplete /
    # not measured (no results, judged without it)
    checkpoint_bytes: float | None
    bits_per_weight: float | None


@dataclass
class ReportData:
    plan: Plan
    nightly_id: str
    gates: GateReport
    results: dict[tuple[str, str], ResultRecord]  # (checkpoint, suite) -> result
    variants: list[VariantRow]
    baseline_bytes: float | None
    tags: dict[str, str] = field(default_factory=dict)
    changes: object | None = None  # pandas DataFrame of changes vs the previous passing nightly
    trends: object | None = None  # pandas DataFrame: nightly x (variant, metric)
    tracking_note: str = ""

    def metric(self, checkpoint: str, suite: str, name: str) -> Metric | None:
        result = self.results.get((checkpoint, suite))
        return result.metric(name) if result else None

    def baseline_metric(self, suite: str, name: str) -> Metric | None:
        return self.metric(self.plan.baseline_name, suite, name)

    def recovery_pct(self, checkpoint: str, suite: str, name: str) -> float | None:
        value, base = self.metric(checkpoint, suite, name), self.baseline_metric(suite, name)
        if value is None or base is None:
            return None
        ratio = recovery(value, base)
        return None if ratio is None else float(ratio * 100)

    def by_layer(self, checkpoint: str, name: str) -> dict[int, float]:
        result = self.results.get((checkpoint, "perplexity"))
        layers = result.by_layer if result else {}
        return {int(layer): values[name] for layer, values in layers.items() if name in values}


def _size(
    results: dict[tuple[str, str], ResultRecord], checkpoint: str, folder: Path | None = None
) -> tuple[float | None, float | None]:
    """(bytes, bits per weight) from the latency suite, else from the checkpoint's manifest, else from
    its safetensors shards in `folder` where this machine has them."""
    latency = results.get((checkpoint, "latency"))
    size = latency.metric("checkpoint_bytes") if latency else None
    bits = latency.metric("bits_per_weight") if latency else None
    if size is None:
        manifests = (r.manifest() for (c, _), r in results.items() if c == checkpoint)
        manifest = next((m for m in manifests if m is not None), None)
        if manifest:
            return float(manifest.total_bytes), float(manifest.bits_per_weight.overall)
        if folder is not None and any(folder.glob("*.safetensors")):
            return float(stored_size(folder)[0]), stored_bits_per_weight(folder)[1]
        return None, None
    return size.value, bits.value if bits else None


def _outcome(gates: GateReport, name: str, canary: bool) -> str:
    if name in gates.missing:
        return "not measured"
    rows = [r for r in gates.rows if r.variant == name]
    if any(r.verdict == "missing" for r in rows):
        return "incomplete"
    failing = any(r.verdict == "fail" for r in rows)
    if canary:
        return "caught" if failing else "MISSED"
    return "fail" if failing else "pass"


def _scheme_of(results: dict[tuple[str, str], ResultRecord], checkpoint: str, variant) -> str:
    """An endpoint's or a checkpoint made elsewhere: its manifest's scheme when it has one, else what it is."""
    if variant.endpoint is not None:
        return f"endpoint {variant.endpoint.base_url}"
    manifests = (r.manifest() for (c, _), r in results.items() if c == checkpoint)
    manifest = next((m for m in manifests if m is not None), None)
    if manifest is not None:
        return manifest.scheme.name
    try:  # the checkpoint's own config.json, where this machine has it
        config = json.loads((Path(variant.path) / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return "made elsewhere"
    return describe_quantization(config.get("quantization_config"))


def describe_quantization(config: dict | None) -> str:
    """A checkpoint's quantization_config in a few words: `int4 group 128 sym (pack-quantized)`."""
    if not isinstance(config, dict):
        return "unquantized"
    if config.get("quant_method") != "compressed-tensors":
        return str(config.get("quant_method", "unknown quantization"))
    parts = []
    for group in (config.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        how = f"{weights.get('type', '?')}{weights.get('num_bits', '?')} {weights.get('strategy', '?')}"
        if weights.get("group_size"):
            how += f" {weights['group_size']}"
        how += " sym" if weights.get("symmetric") else " asym"
        parts.append(f"{how} ({group.get('format') or config.get('format', '?')})")
    return ", ".join(parts) or "compressed-tensors"


def gather(plan: Plan, results: list[ResultRecord], gates: GateReport, nightly_id: str) -> ReportData:
    by_pair = {(r.variant, r.suite): r for r in results}
    variants = []
    for variant in plan.variants:
        checkpoint = plan.checkpoint_name(variant)
        size, bits = _size(by_pair, checkpoint, Path(variant.path) if variant.path else None)
        variants.append(
            VariantRow(
                variant.name, checkpoint, variant.scheme or _scheme_of(by_pair, checkpoint, variant), variant.group,
                variant.canary, variant.origin,
                _outcome(gates, variant.name, variant.canary), size, bits,
            )
        )
    baseline_bytes, _ = _size(by_pair, plan.baseline_name, plan.model)
    return ReportData(plan, nightly_id, gates, by_pair, variants, baseline_bytes)


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def headline_columns(data: ReportData) -> list[tuple[str, list[str]]]:
    """(suite, its headline metric names) for each suite of the plan with results, in the plan's order;
    the names are those of quantgate.core.headline, as the suite's results have them."""
    out = []
    order = [data.plan.baseline_name] + [v.checkpoint for v in data.variants]
    for suite in data.plan.suite_names:
        names: list[str] = []
        for result in (data.results[(c, suite)] for c in order if (c, suite) in data.results):
            kind = str(result.suite_config.get("kind", suite))
            names += [m.name for m in headline_metrics(kind, result.metrics, result.comparison) if m.name not in names]
        if names:
            out.append((suite, names))
    return out
