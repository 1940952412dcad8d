"""History without MLflow round trips: changes and trends from records in hand against logged nightlies."""

from __future__ import annotations

import math

from quantgate.core.metrics import Metric
from quantgate.core.record import ResultRecord
from quantgate.tracking.history import changes_between, record_values


def test_record_values_are_keyed_by_variant_and_suite_metric() -> None:
    results = [
        ResultRecord.of("tiny-int4", "perplexity", 1, [Metric("perplexity", 2.5, "lower", 0.1, "", 9)],
                        [Metric("kl_mean", 0.002, "lower", 0.0001, "nats")]),  # fmt: skip
        ResultRecord.of("tiny", "perplexity", 1, [Metric("perplexity", 2.4, "lower", 0.1)], role="baseline"),
    ]
    table = record_values(results, {"tiny-int4": "int4"})
    assert table == {
        "int4": {
            "perplexity.perplexity": (2.5, 0.1, "lower", ""),
            "perplexity.kl_mean": (0.002, 0.0001, "lower", "nats"),
        },
        "tiny": {"perplexity.perplexity": (2.4, 0.1, "lower", "")},
    }


def test_changes_flag_only_beyond_two_combined_stderr_and_say_which_way_is_worse() -> None:
    previous = {"int4": {"p.kl": (0.0020, 0.0001, "lower", ""), "p.acc": (0.80, 0.01, "higher", ""),
                         "p.none": (1.0, None, "lower", "")}}  # fmt: skip
    current = {"int4": {"p.kl": (0.0039, 0.0001, "lower", ""), "p.acc": (0.79, 0.01, "higher", ""),
                        "p.none": (9.0, None, "lower", "")}, "new": {"p.kl": (1.0, 0.1, "lower", "")}}  # fmt: skip
    frame = changes_between(current, previous).set_index("metric")
    assert list(frame.index) == ["p.acc", "p.kl"]  # no stderr: not judged; a new variant: nothing to compare
    kl, acc = frame.loc["p.kl"], frame.loc["p.acc"]
    assert bool(kl.flagged) and bool(kl.worse) and math.isclose(kl.sigmas, 0.0019 / math.hypot(1e-4, 1e-4))
    assert not bool(acc.flagged) and bool(acc.worse)
