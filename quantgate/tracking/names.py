"""Every name quantgate writes to MLflow, defined once: metric keys, tag keys, param keys.

Metric keys of a variant's run, for the headline metrics only (quantgate.core.headline), each logged
at the nightly's step ("<suite>.<metric>" is how plans and gates address a number too):
    <suite>.<metric>                 the value as measured (or from the comparison: kl_mean, ...)
    <suite>.<metric>.recovery_pct    direction-aware recovery against the baseline, in percent
Every metric of a suite, headline or not, is a row of the run's table `metrics/<suite>.json`
(TABLE_COLUMNS: value, stderr, baseline, delta, recovery_pct, direction, unit, n, ...): direction
and unit are said there once, not as a tag per key.
Characters MLflow does not take in a key (it takes letters, digits, _ - . / : and space) become "_":
toolcall's "pass^2" is logged as "toolcall.pass_2".
"""

from __future__ import annotations

import re
from typing import Literal

Statistic = Literal["stderr", "delta", "recovery_pct"]
STATISTICS: tuple[Statistic, ...] = ("stderr", "delta", "recovery_pct")

EXPERIMENT_PREFIX = "quantgate/"

# tags of every run quantgate makes
TAG_KIND = "quantgate.kind"  # "nightly" (parent), "variant" (child) or "trend" (a variant across nightlies)
TAG_NIGHTLY = "quantgate.nightly_id"
TAG_PLAN = "quantgate.plan"
TAG_PLAN_HASH = "quantgate.plan_hash"
# parent (nightly) tags
TAG_GIT = "quantgate.git_revision"
TAG_DATE = "quantgate.date"
TAG_VERSION = "quantgate.version"
TAG_HARDWARE = "quantgate.hardware"
TAG_VERDICT = "quantgate.verdict"  # "pass" / "fail", set when the nightly was gated
# child (variant) tags
TAG_VARIANT = "quantgate.variant"
TAG_CHECKPOINT = "quantgate.checkpoint"
TAG_BASELINE = "quantgate.baseline"  # "true" on the baseline's run
TAG_CANARY = "quantgate.canary"
TAG_GROUP = "quantgate.group"
TAG_SUITE_LOGGED = "quantgate.logged.{suite}"  # set last: the (nightly, variant, suite) is complete
TAG_DIRECTION = "quantgate.direction.{key}"  # runs logged before the metrics tables: direction per key
TAG_UNIT = "quantgate.unit.{key}"
TAG_STEP = "quantgate.step"  # on the parent: the nightly's ordinal in its experiment, the step of its metrics

KIND_NIGHTLY = "nightly"
KIND_VARIANT = "variant"
KIND_TREND = "trend"  # one run per (plan, variant): its headline keys at every nightly's step

# params of a variant's run
PARAM_SCHEME = "scheme"
PARAM_METHOD = "method"
PARAM_CALIBRATION = "calibration"
PARAM_GROUP = "group"
PARAM_SUITE_VERSION = "suite.{suite}.version"
PARAM_MANIFEST_SCHEME = "scheme.resolved.{field}"  # from the checkpoint's quantgate.json

ARTIFACT_PLAN = "plan.json"
ARTIFACT_SUITE_DIR = "suites/{suite}"
ARTIFACT_TABLE_DIR = "metrics"
ARTIFACT_TABLE = ARTIFACT_TABLE_DIR + "/{suite}.json"  # an MLflow table: every metric of the suite, one row each
TABLE_COLUMNS = (
    "metric", "value", "stderr", "baseline", "delta", "recovery_pct", "direction", "unit", "n", "source", "headline",
)  # fmt: skip
ARTIFACT_REPORT_DIR = "report"  # on the nightly's parent run: report.md, report.html, gates.xml


MLFLOW_UNSAFE = re.compile(r"[^/\w.\- :]")


def metric_key(suite: str, metric: str, statistic: Statistic | None = None) -> str:
    key = MLFLOW_UNSAFE.sub("_", f"{suite}.{metric}")
    return f"{key}.{statistic}" if statistic else key


def split_metric_key(key: str) -> tuple[str, Statistic | None]:
    """("<suite>.<metric>", statistic or None) of a metric key written by `metric_key`."""
    head, _, last = key.rpartition(".")
    if head and last in STATISTICS:
        return head, last  # type: ignore[return-value]
    return key, None


def suite_logged_tag(suite: str) -> str:
    return TAG_SUITE_LOGGED.format(suite=suite)


def direction_tag(key: str) -> str:
    return TAG_DIRECTION.format(key=key)


def unit_tag(key: str) -> str:
    return TAG_UNIT.format(key=key)


def experiment_name(plan_name: str) -> str:
    return f"{EXPERIMENT_PREFIX}{plan_name}"
