"""History gates: a variant's metric against the same variant in the previous passing nightly of the plan.

quantgate's pipelines are deterministic, so two cases:

- **Same identity** (checkpoint, baseline, suite, backend settings, CPU, package versions incl.
  quantgate's, and quantgate's git revision when known; `fingerprint`; not a server's URL, which a served
  checkpoint's identity replaces by what it serves): the results must be identical.
  Any difference in the value, or in the per-item values behind it, is nondeterminism and fails the
  row, saying so.
- **Changed identity** (a new build, another quantgate, another torch): the move to the worse side is
  tested, one-sided at `alpha`, paired over the items both nightlies measured where the result folders
  keep them (gates/samples.py: per-document NLL and KL, per-item correctness, per-episode success),
  else through the two standard errors (gates/power.py). It fails when significant and larger than
  `max_regression` and than ROUNDING (relative to the previous value): float32 rounding under another
  thread count or batch shape moves KL by about 1e-13 nats, consistently enough over 16 documents to be
  "significant" (`quantgate drill`), and is no regression. A metric with neither per-item values nor
  stderrs fails on any regression larger than those.

No previous passing nightly (the first one), or one without this variant or metric: the row passes and
says there was nothing to compare with. Where the previous nightly comes from (MLflow, or the local
nightly store when MLflow cannot be reached) is the caller's business (quantgate/finish.py).

**Accepted references.** A deliberate change (a new quantization default) fails the history gate until
a nightly passes with it. `quantgate accept` records that a nightly's values of some variants are
intended (tracking/acceptance.py); for those variants the reference is then the newest nightly that
passed or was accepted for them, whichever is newer (`History.reference`), and every row compared with
an accepted nightly says so, with when, by whom and why.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from quantgate.core.metrics import Metric
from quantgate.core.record import ENVIRONMENT_FILE, ResultRecord
from quantgate.gates import power
from quantgate.gates.samples import Items, items
from quantgate.plan import HistoryThreshold

ROUNDING = 1e-6  # relative to max(1, |previous value|): a smaller move is floating-point rounding


@dataclass(frozen=True)
class PreviousNightly:
    nightly_id: str
    source: str  # where it was read: "MLflow <uri>" or "local nightly store <folder>"
    results: list[ResultRecord]  # with their folders (samples.jsonl, environment.json)
    accepted: str = ""  # a reference because it was accepted: "accepted <when> by <who>: <reason>"

    def describe(self) -> str:
        where = f"nightly {self.nightly_id} ({self.source}"
        return f"{where}; {self.accepted})" if self.accepted else f"{where})"


@dataclass(frozen=True)
class History:
    """What the history gates compare with: the previous passing nightly, or why there is none, and
    per checkpoint a nightly accepted as its reference since then."""

    previous: PreviousNightly | None
    note: str = ""  # without a previous nightly: why (first nightly of the plan, none passed, ...)
    accepted: dict[str, PreviousNightly] = field(default_factory=dict)  # checkpoint -> newer accepted nightly

    def reference(self, checkpoint: str) -> PreviousNightly | None:
        return self.accepted.get(checkpoint, self.previous)


@dataclass(frozen=True)
class HistoryVerdict:
    passed: bool
    reason: str
    previous_value: float | None
    test: power.Test | None


def _path_names(value: object) -> object:
    """A suite config with file paths reduced to their names (the same suite in another checkout)."""
    if isinstance(value, dict):
        return {k: _path_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_path_names(v) for v in value]
    return Path(value).name if isinstance(value, str) and "/" in value else value


def fingerprint(result: ResultRecord) -> dict | None:
    """Everything that decides a result's numbers, or None when its environment was not kept."""
    if result.folder is None or not (result.folder / ENVIRONMENT_FILE).is_file():
        return None
    environment = json.loads((result.folder / ENVIRONMENT_FILE).read_text())
    baseline = result.baseline
    return {
        "checkpoint": result.model.identity,
        "baseline": None if baseline is None else (baseline.identity, baseline.cache_key),
        "suite": _path_names(result.suite_config),
        # not where it was reached: a served checkpoint's identity is what it serves (engine, settings), and
        # its server gets another port every night; an endpoint's identity names its URL already
        "backend": {k: v for k, v in environment.get("backend", {}).items() if k not in ("model", "base_url")},
        "cpu": environment.get("cpu"),
        "packages": environment.get("packages"),  # quantgate's version among them
        "quantgate revision": environment.get("git_revision"),  # code changes between versions
    }


def _changed(now: dict | None, before: dict | None) -> list[str]:
    if now is None or before is None:
        return ["environment not kept"]
    return [part for part in now if now[part] != before.get(part)]


def _same_items(now: Items | None, before: Items | None) -> bool:
    return now is None or before is None or now.values == before.values


def _paired(now: Items, before: Items, metric: Metric, previous: float, alpha: float) -> power.Test | None:
    keys = sorted(now.values.keys() & before.values.keys(), key=str)
    if len(keys) < 2:
        return None
    old, new = [before.values[k] for k in keys], [now.values[k] for k in keys]
    if now.binary and metric.direction == "higher":
        return power.paired_binary([v > 0.5 for v in old], [v > 0.5 for v in new], alpha, now.scale)
    weights = [now.weights[k] for k in keys]
    test = power.paired_mean(old, new, weights, alpha, lower_is_better=metric.direction == "lower")
    if now.log_scale:  # perplexity = exp(mean NLL): the regression and detectable back in perplexity units
        detectable = None if test.detectable is None else previous * math.expm1(test.detectable)
        return power.Test(previous * math.expm1(test.regression), test.p_value, detectable, test.basis)
    if now.scale != 1.0:
        detectable = None if test.detectable is None else now.scale * test.detectable
        return power.Test(now.scale * test.regression, test.p_value, detectable, test.basis)
    return test


def regression_test(
    current: ResultRecord, previous: ResultRecord, metric: Metric, before: Metric, alpha: float
) -> power.Test | None:
    """The one-sided test of `metric` having moved to its worse side since `before`."""
    now_items, old_items = items(current, metric.name), items(previous, metric.name)
    if now_items is not None and old_items is not None:
        paired = _paired(now_items, old_items, metric, before.value, alpha)
        if paired is not None:
            return paired
    regression = metric.value - before.value if metric.direction == "lower" else before.value - metric.value
    if metric.stderr is not None and before.stderr is not None:
        return power.two_stderrs(regression, metric.stderr, before.stderr, alpha)
    return None


def judge_history(
    current: ResultRecord, metric: Metric, history: History | None, rule: HistoryThreshold
) -> HistoryVerdict:
    nightly = history.reference(current.variant) if history is not None else None
    if history is None or nightly is None:
        note = history.note if history is not None else "no history was looked up"
        return HistoryVerdict(True, f"nothing to compare with: {note}", None, None)
    previous = next(
        (r for r in nightly.results if r.variant == current.variant and r.suite == current.suite), None
    )
    before = previous.metric(metric.name) if previous is not None else None
    if previous is None or before is None:
        what = f"{current.suite}.{metric.name} of {current.variant}"
        return HistoryVerdict(
            True, f"nothing to compare with: {nightly.describe()} has no {what}", None, None
        )
    since = nightly.describe()
    changed = _changed(fingerprint(current), fingerprint(previous))
    if not changed:
        same_items = _same_items(items(current, metric.name), items(previous, metric.name))
        if Fraction(metric.value) == Fraction(before.value) and same_items:
            return HistoryVerdict(
                True, f"identical to {since}: same checkpoint, suite, backend and quantgate version", before.value,
                None,
            )  # fmt: skip
        what = "its per-item values differ" if Fraction(metric.value) == Fraction(before.value) else (
            f"value {metric.value!r} != {before.value!r}"
        )
        return HistoryVerdict(
            False,
            f"nondeterminism: same checkpoint, suite, backend and quantgate version as {since}, but {what}",
            before.value,
            None,
        )
    test = regression_test(current, previous, metric, before, rule.alpha)
    moved = f"{'changed: ' + ', '.join(changed)}; {before.value:.6g} -> {metric.value:.6g}"
    tolerated = max(Fraction(rule.max_regression), Fraction(ROUNDING) * max(1, abs(Fraction(before.value))))
    if test is None:
        regression = Fraction(metric.value) - Fraction(before.value)
        worse = regression if metric.direction == "lower" else -regression
        ok = worse <= tolerated
        return HistoryVerdict(
            ok, f"since {since} ({moved}), no variance to test: regression {float(worse):.6g} "
            f"{'<=' if ok else '>'} {float(tolerated):.3g}", before.value, None,
        )  # fmt: skip
    significant = test.p_value < rule.alpha
    large = Fraction(test.regression) > tolerated
    detail = (
        f"since {since} ({moved}): regression {test.regression:.6g}, {test.basis}, "
        f"p = {test.p_value:.3g} {'<' if significant else '>='} alpha {rule.alpha:g}"
    )
    if significant and large:
        return HistoryVerdict(False, f"significant regression {detail}", before.value, test)
    if significant:
        detail += f", within the tolerated {float(tolerated):.3g} (max_regression, or rounding)"
    return HistoryVerdict(True, f"no significant regression {detail}", before.value, test)
