"""Server down -> the nightly waits in the outbox -> `quantgate sync` uploads it; nothing is lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from quantgate.core.record import ResultRecord
from quantgate.tracking import names, outbox
from quantgate.tracking.nightly_record import nightly_record
from quantgate.tracking.publish import deliver
from quantgate.tracking.store import TrackingStore


def test_unreachable_server_keeps_the_nightly_then_sync_uploads_it(
    mlflow_server: str,
    closed_port_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nightly_results: Callable[..., list[ResultRecord]],
    make_plan,
):
    from quantgate.cli import main

    state = tmp_path / "state"
    monkeypatch.setenv("QUANTGATE_STATE_DIR", str(state))
    plan = make_plan()
    results = nightly_results()
    record = nightly_record(plan, results, "nightly-offline", "pass")

    delivery = deliver(TrackingStore(closed_port_uri, None), record)
    assert (
        delivery.runs is None and "unreachable" in delivery.message and "quantgate sync" in delivery.message
    )
    [entry] = outbox.pending(state)
    assert entry == delivery.outbox_entry and not list(entry.parent.glob(".*"))  # no half-written entry
    for result in results:  # the harness's folders may be cleaned: the entry holds copies
        for path in result.artifacts:
            path.unlink()

    assert main(["sync", "--tracking-uri", closed_port_uri]) == 1  # still down: kept
    assert outbox.pending(state) == [entry]

    assert main(["sync", "--tracking-uri", mlflow_server]) == 0
    assert outbox.pending(state) == [] and not any((state / "outbox").iterdir())
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(f"quantgate/{plan.name}")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 7  # a parent, three children, three trend runs
    parent = next(r for r in runs if r.data.tags[names.TAG_KIND] == "nightly")
    assert (
        parent.data.tags[names.TAG_NIGHTLY] == "nightly-offline"
        and parent.data.tags[names.TAG_VERDICT] == "pass"
    )
    good = next(r for r in runs if r.data.tags.get(names.TAG_CHECKPOINT) == "tiny-w4a16-g128-rtn")
    assert (
        good.data.metrics["perplexity.perplexity"] == 10.5 and good.data.metrics["benchmark.acc"] == 0.79
    )
    artifacts = {a.path for a in client.list_artifacts(good.info.run_id, "suites/benchmark")}
    assert artifacts == {"suites/benchmark/summary.json", "suites/benchmark/samples.jsonl"}

    assert main(["sync", "--tracking-uri", mlflow_server]) == 0  # nothing left: a no-op
    assert len(client.search_runs([experiment.experiment_id])) == 7


def test_outbox_ignores_entries_being_written(tmp_path: Path, nightly_results, make_plan):
    record = nightly_record(make_plan(), nightly_results(), "nightly-partial")
    (tmp_path / "outbox" / ".nightly-partial-abc.tmp").mkdir(parents=True)
    entry = outbox.put(record, tmp_path)
    assert outbox.pending(tmp_path) == [entry]
    back = outbox.read(entry)
    assert back.to_json()["results"][0]["metrics"] == record.to_json()["results"][0]["metrics"]
    assert all(p.is_file() and entry in p.parents for r in back.results for p in r.artifacts)
