"""Reading back from MLflow: the compare table, the previous passing nightly, noise, trends."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mlflow import MlflowClient

from quantgate.core.record import ResultRecord
from quantgate.tracking import compare, history
from quantgate.tracking.log import log_nightly
from quantgate.tracking.nightly_record import nightly_record
from quantgate.tracking.store import TrackingStore


def test_compare_table_is_direction_aware(
    store: TrackingStore, nightly_results: Callable[..., list[ResultRecord]], make_plan, capsys
):
    from quantgate.cli import main

    client = MlflowClient(tracking_uri=store.uri)
    plan = make_plan()
    nightly_id = f"n1-{plan.name}"
    runs = log_nightly(client, store, nightly_record(plan, nightly_results(good_ppl=10.5), nightly_id, "pass"))
    table = compare.nightly_table(client, runs.parent_run_id)
    assert set(table.index.get_level_values("variant")) == {"good", "bad"}
    ppl = table.loc[("good", "perplexity.perplexity")]
    assert (ppl["baseline"], ppl["value"], ppl["direction"]) == (10.0, 10.5, "lower")
    assert ppl["difference"] == pytest.approx(0.5) and ppl["regression"] == pytest.approx(0.5)  # worse
    assert ppl["recovery_pct"] == pytest.approx(100 * 10 / 10.5)
    assert ppl["ci_low"] == pytest.approx(10.5 - 1.959964 * 0.05)
    acc = table.loc[("good", "benchmark.acc")]
    assert acc["regression"] == pytest.approx(0.01) and acc["recovery_pct"] == pytest.approx(98.75)
    assert table.loc[("good", "perplexity.kl_mean")]["value"] == 0.02  # comparison metrics are rows too
    assert table.loc[("bad", "benchmark.acc_lost")]["direction"] == "lower"

    pair = compare.runs_table(client, runs.child_run_ids["tiny"], runs.child_run_ids["tiny-w2a16-g32-rtn"])
    assert pair.loc[("bad", "perplexity.perplexity")]["regression"] == pytest.approx(20.0)

    assert main(["compare", "--nightly", runs.parent_run_id, "--tracking-uri", store.uri]) == 0
    out = capsys.readouterr().out
    assert "perplexity.perplexity" in out and "recovery_pct" in out
    assert main(["compare", "--nightly", nightly_id, "--tracking-uri", store.uri]) == 0  # as report --nightly
    assert out.endswith(capsys.readouterr().out)  # the same table (MLflow's own "View run" lines before it)
    assert main(["compare", "--nightly", "no-such-nightly", "--tracking-uri", store.uri]) == 2
    assert "nightly 'no-such-nightly': no nightly with this id or run id" in capsys.readouterr().err


def test_history_flags_changes_beyond_noise(
    embedded_store: TrackingStore, nightly_results, make_plan, capsys
):
    from quantgate.cli import main

    client = MlflowClient(tracking_uri=embedded_store.uri)
    plan = make_plan()
    first = log_nightly(
        client, embedded_store, nightly_record(plan, nightly_results(10.5, "a"), "n1", "pass")
    )
    failed = log_nightly(
        client, embedded_store, nightly_record(plan, nightly_results(10.2, "b"), "n2", "fail")
    )
    # perplexity +0.1 against a combined stderr of 0.0707: 1.41 sigma, within noise; then +0.5: 7 sigma
    quiet = log_nightly(
        client, embedded_store, nightly_record(plan, nightly_results(10.6, "c"), "n3", "pass")
    )
    loud = log_nightly(client, embedded_store, nightly_record(plan, nightly_results(11.1, "d"), "n4", "pass"))

    assert (
        history.previous_passing(client, quiet.parent_run_id).info.run_id == first.parent_run_id
    )  # n2 failed
    near = history.changes(client, quiet.parent_run_id, first.parent_run_id)
    ppl = near.set_index(["variant", "metric"]).loc[("good", "perplexity.perplexity")]
    assert not ppl["flagged"] and ppl["sigmas"] == pytest.approx(0.1 / 0.05 / 2**0.5)
    far = history.changes(
        client, loud.parent_run_id, history.previous_passing(client, loud.parent_run_id).info.run_id
    )
    flagged = far[far["flagged"]]
    assert list(zip(flagged["variant"], flagged["metric"], flagged["worse"], strict=True)) == [
        ("good", "perplexity.perplexity", True)
    ]

    trend = history.trends(client, plan.name, last=3)
    assert list(trend.index) == ["n2", "n3", "n4"]
    assert list(trend[("good", "perplexity.perplexity")]) == [10.2, 10.6, 11.1]
    assert failed.parent_run_id != first.parent_run_id

    args = [
        "compare",
        "--nightly",
        loud.parent_run_id,
        "--changes",
        "--trend",
        "2",
        "--tracking-uri",
        embedded_store.uri,
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "changes beyond noise since nightly n3: 1" in out and "last 2 nightlies" in out
