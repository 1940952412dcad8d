"""Gate rows: each (variant, gate, threshold) judged on the numbers exactly as measured.

Comparisons are exact on the recorded floats (`fractions.Fraction`), never on a rounded or
formatted number: a recovery of 94.5 % fails a 95 % gate, and so does 94.99999 %. Direction comes
from the Metric: recovery is value/baseline when higher is better and baseline/value when lower is
better; a regression is a move to the worse side.

The nightly passes when every real variant passes every gate and every canary fails at least one
(a canary that passes all its gates means the harness has lost the sensitivity to catch it).

Every row states its power: the smallest regression it could detect at its sample size and alpha with
80 % power, from the observed variance (gates/power.py; alpha 0.05 one-sided for the threshold kinds
that have none). A threshold that allows less than that is named in the report's warnings: the gate
asks for more than its data can show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from quantgate.core.errors import InputError
from quantgate.core.metrics import Metric
from quantgate.core.record import ResultRecord
from quantgate.gates import power
from quantgate.gates.history import History, judge_history
from quantgate.plan import Gate, HistoryThreshold, Plan, PlanVariant, SignificanceThreshold

Verdict = Literal["pass", "fail", "missing"]


@dataclass(frozen=True)
class GateRow:
    variant: str
    group: str
    canary: bool  # as gated: False for a canary gated as real (--as-real)
    metric: str  # "<suite>.<metric>"
    gate: str  # the threshold kind (min_recovery, max_value, ...)
    baseline: float | None
    value: float | None
    recovery_pct: float | None  # direction-aware; None without a baseline or a direction
    threshold: float  # for no_significant_regression and history: alpha
    verdict: Verdict
    reason: str
    detectable: float | None = None  # smallest regression detectable at alpha with 80 % power (metric units)
    detectable_basis: str = ""  # what it was computed from
    previous: float | None = None  # history: the value in the previous passing nightly

    @property
    def name(self) -> str:
        return f"{self.variant}: {self.metric} {self.gate}"


@dataclass(frozen=True)
class GateReport:
    plan: str
    rows: list[GateRow]
    passed: bool
    reasons: list[str]  # why the nightly fails, or what it proved when it passes
    passing: list[str] = field(default_factory=list)  # real variants that pass every gate of theirs
    missing: list[str] = field(default_factory=list)  # variants with gate rows but no results (not judged)
    warnings: list[str] = field(default_factory=list)  # thresholds finer than their gate can detect


def recovery(metric: Metric, baseline: Metric) -> Fraction | None:
    """value/baseline (higher is better) or baseline/value (lower is better), exact; None if undefined."""
    numerator, denominator = (
        (metric.value, baseline.value) if metric.direction == "higher" else (baseline.value, metric.value)
    )
    if metric.direction == "none" or denominator <= 0 or numerator < 0:
        return None
    return Fraction(numerator) / Fraction(denominator)


def regression(metric: Metric, baseline_value: float) -> Fraction:
    """How far `metric` moved to its worse side of `baseline_value` (negative: it improved)."""
    difference = Fraction(metric.value) - Fraction(baseline_value)
    return -difference if metric.direction == "higher" else difference


def _number(x: float | Fraction, against: float | Fraction | None = None) -> str:
    """`x` rounded for reading (4 significant digits), with as many more as it takes to tell it from
    `against` (the threshold it was compared with, exactly): never "99.5 % < 99.5 %"."""
    for digits in range(4, 18):
        text = f"{float(x):.{digits}g}"
        if against is None or x == against or text != f"{float(against):.{digits}g}":
            return text
    return repr(float(x))


class _Judge:
    """Judges one variant's gates against the results of its suites and the baseline's."""

    def __init__(self, plan: Plan, results: list[ResultRecord], history: History | None) -> None:
        self.plan = plan
        self.history = history
        self.warnings: list[str] = []
        self.by_key = {(r.variant, r.suite): r for r in results}
        self.baselines: dict[str, ResultRecord] = {}
        for result in results:
            if result.role == "baseline" or result.variant == plan.baseline_name:
                if result.suite in self.baselines and self.baselines[result.suite] is not result:
                    raise InputError(f"two baseline results for suite {result.suite!r}")
                self.baselines[result.suite] = result

    def result(self, variant: PlanVariant, suite: str) -> ResultRecord | None:
        return self.by_key.get((self.plan.checkpoint_name(variant), suite))

    def lookup(self, variant: PlanVariant, qualified: str) -> Metric | None:
        suite, name = qualified.split(".", 1)
        result = self.result(variant, suite)
        return result.metric(name) if result else None

    def baseline(self, gate: Gate) -> Metric | None:
        result = self.baselines.get(gate.suite)
        return result.metric(gate.metric_name) if result else None

    def rows(self, variant: PlanVariant, canary: bool) -> list[GateRow]:
        rows = []
        for gate in self.plan.gates_for(variant):
            metric, base = self.lookup(variant, gate.metric), self.baseline(gate)
            for kind, threshold in gate.thresholds():
                row = dict(
                    variant=variant.name,
                    group=variant.group,
                    canary=canary,
                    metric=gate.metric,
                    gate=kind,
                    baseline=base.value if base else None,
                    value=metric.value if metric else None,
                    recovery_pct=None,
                    threshold=threshold if isinstance(threshold, float) else threshold.alpha,
                )
                if metric is None:
                    where = self.plan.checkpoint_name(variant)
                    rows.append(
                        GateRow(**row, verdict="missing", reason=f"no {gate.metric} in results of {where}")
                    )
                    continue
                ratio = recovery(metric, base) if base else None
                row["recovery_pct"] = float(ratio * 100) if ratio is not None else None
                if isinstance(threshold, HistoryThreshold):
                    rows.append(self.history_row(row, variant, gate, metric, threshold))
                else:
                    verdict, reason = self.judge(variant, gate, kind, threshold, metric, base, ratio)
                    detectable, basis = self.power(variant, gate, kind, threshold, metric, base)
                    rows.append(GateRow(**row, verdict=verdict, reason=reason, detectable=detectable,
                                        detectable_basis=basis))  # fmt: skip
                allowed = allowed_regression(kind, threshold, metric, base)
                if rows[-1].detectable is not None and allowed is not None and 0 < allowed < rows[-1].detectable:
                    self.warnings.append(
                        f"{rows[-1].name}: the threshold lets through a regression of {allowed:.3g}, less than "
                        f"the {rows[-1].detectable:.3g} this gate detects with 80 % power ({rows[-1].detectable_basis})"
                    )
        return rows

    def history_row(
        self, row: dict, variant: PlanVariant, gate: Gate, metric: Metric, rule: HistoryThreshold
    ) -> GateRow:
        if metric.direction == "none":
            raise InputError(f"history gate on {gate.metric}: the metric has no direction (informational)")
        judged = judge_history(self.result(variant, gate.suite), metric, self.history, rule)
        if judged.test is not None:
            detectable, basis = judged.test.detectable, judged.test.basis
        elif judged.previous_value is not None and judged.passed:
            detectable, basis = 0.0, "identity unchanged: any difference fails (deterministic)"
        else:
            detectable, basis = None, "no previous value or no variance"
        return GateRow(
            **row, verdict="pass" if judged.passed else "fail", reason=judged.reason, detectable=detectable,
            detectable_basis=basis, previous=judged.previous_value,
        )  # fmt: skip

    def power(
        self,
        variant: PlanVariant,
        gate: Gate,
        kind: str,
        threshold: float | SignificanceThreshold,
        metric: Metric,
        base: Metric | None,
    ) -> tuple[float | None, str]:
        """The smallest regression this row could detect with 80 % power, and from what."""
        alpha, sides = 0.05, 1
        if isinstance(threshold, SignificanceThreshold):
            alpha, sides = threshold.alpha, 2
            if threshold.p_value is not None and threshold.p_value.endswith("_mcnemar_p"):
                stem = threshold.p_value.removesuffix("_mcnemar_p")
                lost, gained = self.lookup(variant, f"{stem}_lost"), self.lookup(variant, f"{stem}_gained")
                if lost is not None and gained is not None and metric.n:
                    discordant = int(lost.value + gained.value)
                    return (
                        power.detectable_mcnemar(discordant, metric.n, alpha, sides),
                        f"McNemar, {discordant} of {metric.n} items discordant, alpha {alpha:g} two-sided",
                    )
        if kind in ("max_value", "min_value"):
            found = power.detectable_continuous(metric.stderr, alpha)
            return found, "stderr of the value, alpha 0.05" if found is not None else "no stderr"
        paired = self.lookup(variant, f"{gate.metric}_delta")
        if paired is not None and paired.stderr is not None:
            se, basis = paired.stderr, "paired stderr of the difference"
        elif gate.metric_name == "perplexity" and base is not None and (
            log_ratio := self.lookup(variant, f"{gate.suite}.ln_ppl_ratio")
        ) is not None and log_ratio.stderr is not None:
            se, basis = base.value * log_ratio.stderr, "paired stderr of ln PPL ratio"
        elif base is not None and metric.stderr is not None and base.stderr is not None:
            se, basis = math.hypot(metric.stderr, base.stderr), "two stderrs"
        else:
            return None, "no stderr"
        where = f"alpha {alpha:g}{' two-sided' if sides == 2 else ''}"
        return power.detectable_continuous(se, alpha, sides), f"{basis}, {where}"

    def judge(
        self,
        variant: PlanVariant,
        gate: Gate,
        kind: str,
        threshold: float | SignificanceThreshold,
        metric: Metric,
        base: Metric | None,
        ratio: Fraction | None,
    ) -> tuple[Verdict, str]:
        name = gate.metric
        if kind in ("min_recovery", "max_difference") and metric.direction == "none":
            raise InputError(f"gate {kind} on {name}: the metric has no direction (informational)")
        if kind in ("min_recovery", "max_difference") and base is None:
            return "missing", f"no baseline value for {name}"
        if kind == "min_recovery":
            if ratio is None:
                return (
                    "fail",
                    f"recovery undefined (baseline {_number(base.value)}, value {_number(metric.value)})",
                )
            ok = ratio * 100 >= Fraction(threshold)
            return _verdict(
                ok, f"recovery {_number(ratio * 100, threshold)} % {'>=' if ok else '<'} {_number(threshold)} %"
            )
        if kind == "max_difference":
            worse = regression(metric, base.value)
            ok = worse <= Fraction(threshold)
            side = "lower" if metric.direction == "higher" else "higher"
            moved = _number(worse, threshold)
            return _verdict(ok, f"regression {moved} ({side} is worse) {'<=' if ok else '>'} {_number(threshold)}")
        if kind == "max_value":
            ok = Fraction(metric.value) <= Fraction(threshold)
            return _verdict(ok, f"value {_number(metric.value, threshold)} {'<=' if ok else '>'} {_number(threshold)}")
        if kind == "min_value":
            ok = Fraction(metric.value) >= Fraction(threshold)
            return _verdict(ok, f"value {_number(metric.value, threshold)} {'>=' if ok else '<'} {_number(threshold)}")
        return self.significance(variant, metric, base, threshold)

    def significance(
        self, variant: PlanVariant, metric: Metric, base: Metric | None, rule: SignificanceThreshold
    ) -> tuple[Verdict, str]:
        if metric.direction == "none":
            raise InputError(f"no_significant_regression on {metric.name}: the metric has no direction")
        if rule.p_value is not None:
            p = self.lookup(variant, rule.p_value)
            if p is None:
                return "missing", f"no {rule.p_value} in results"
            # with a baseline the metric is a level; without one, a difference (variant - baseline)
            worse = regression(metric, base.value if base else 0.0) > 0
            significant = Fraction(p.value) < Fraction(rule.alpha)
            detail = f"p = {_number(p.value, rule.alpha)} {'<' if significant else '>='} alpha {_number(rule.alpha)}"
            if worse and significant:
                return "fail", f"significant regression: {detail}"
            return "pass", f"{'regression' if worse else 'no regression'}, {detail}"
        low_name, high_name = rule.interval
        low, high = self.lookup(variant, low_name), self.lookup(variant, high_name)
        if low is None or high is None:
            return "missing", f"no {low_name if low is None else high_name} in results"
        interval = f"[{_number(low.value, 0)}, {_number(high.value, 0)}]"
        below, above = Fraction(high.value) < 0, Fraction(low.value) > 0
        if (below and metric.direction == "higher") or (above and metric.direction == "lower"):
            return (
                "fail",
                f"significant regression: difference interval {interval} excludes 0 on the worse side",
            )
        return "pass", f"difference interval {interval} does not show a regression"


def _verdict(ok: bool, reason: str) -> tuple[Verdict, str]:
    return ("pass" if ok else "fail"), reason


def allowed_regression(kind: str, threshold: object, metric: Metric, base: Metric | None) -> float | None:
    """How large a regression from the baseline (or the previous nightly) a threshold lets through,
    in metric units, where it says so."""
    if kind == "max_difference":
        return threshold
    if isinstance(threshold, HistoryThreshold):
        return threshold.max_regression or None
    if base is None or metric.direction == "none":
        return None
    if kind == "min_recovery":
        kept = threshold / 100
        if metric.direction == "higher":
            return base.value * (1 - kept)
        return base.value * (1 / kept - 1) if kept > 0 else None
    if kind == "max_value" and metric.direction == "lower":
        return threshold - base.value
    if kind == "min_value" and metric.direction == "higher":
        return base.value - threshold
    return None


def evaluate(
    plan: Plan,
    results: list[ResultRecord],
    as_real: tuple[str, ...] = (),
    history: History | None = None,
    require_all: bool = True,
) -> GateReport:
    """Every gate row of every planned variant, and the nightly's verdict. `history`: the previous
    passing nightly that history gates compare with (None: not looked up). With `require_all` False,
    a variant with missing results is named as missing and left out of the verdict, not failed."""
    for name in as_real:
        plan.variant(name)  # an unknown name is an input error listing the plan's variants
    judge = _Judge(plan, results, history)
    rows: list[GateRow] = []
    reasons: list[str] = []
    failed = False
    passing: list[str] = []
    not_measured: list[str] = []
    for variant in plan.variants:
        canary = variant.canary and variant.name not in as_real
        variant_rows = judge.rows(variant, canary)
        rows += variant_rows
        failing = [r for r in variant_rows if r.verdict == "fail"]
        missing = [r for r in variant_rows if r.verdict == "missing"]
        if missing and not require_all:
            not_measured.append(variant.name)
            reasons.append(f"{variant.name}: not judged, results missing ({missing[0].reason}; {len(missing)} row(s))")
            continue
        if missing:
            failed = True
            reasons.append(f"{variant.name}: results incomplete ({missing[0].reason}; {len(missing)} row(s))")
        if not canary and not failing and not missing:
            passing.append(variant.name)
        if not canary:
            if failing:
                failed = True
                reasons.append(
                    f"{variant.name} fails {len(failing)} gate(s): "
                    + "; ".join(f"{r.metric} {r.gate}: {r.reason}" for r in failing)
                )
            elif not missing:
                reasons.append(f"{variant.name} passes all {len(variant_rows)} gate(s)")
        elif not variant_rows:
            failed = True
            reasons.append(f"canary {variant.name} has no gates: nothing could catch it")
        elif failing:
            reasons.append(f"canary {variant.name} caught by {len(failing)} gate(s)")
        elif not missing:
            failed = True
            reasons.append(
                f"canary {variant.name} passed all {len(variant_rows)} gate(s): the harness lost the "
                "sensitivity to catch a known-bad variant"
            )
    if not_measured and len(not_measured) == len(plan.variants):
        failed = True
        reasons.append("no variant has results: nothing was judged")
    return GateReport(
        plan=plan.name, rows=rows, passed=not failed, reasons=reasons, passing=passing, missing=not_measured,
        warnings=judge.warnings,
    )
