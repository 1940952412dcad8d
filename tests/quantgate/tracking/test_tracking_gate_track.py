"""`quantgate gate --track` records results and verdict in the default embedded store (state/mlflow.db)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from quantgate.core.metrics import Metric
from quantgate.tracking import names

PLAN = """\
version: 1
name: track-test
model: models/tiny
variants:
  - {name: good, scheme: w8a16, method: rtn, group: int8}
suites: [perplexity]
gates:
  - {metric: perplexity.perplexity, min_recovery: 99}
"""


def write(root: Path, checkpoint: str, ppl: float, role: str) -> None:
    folder = root / checkpoint / "perplexity"
    folder.mkdir(parents=True)
    summary = {
        "model": {"path": f"/nowhere/{checkpoint}", "role": role},
        "suite": {"name": "perplexity", "kind": "perplexity", "version": 3},
        "metrics": [Metric("perplexity", ppl, "lower", 0.1, n=100).to_json()],
        "comparison": [Metric("kl_mean", 0.001, "lower").to_json()] if role == "variant" else None,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "samples.jsonl").write_text("{}\n")


def test_gate_track_logs_to_the_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    from quantgate.cli import main

    monkeypatch.setenv("QUANTGATE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "plan.yaml").write_text(PLAN)
    write(tmp_path / "results", "tiny", 10.0, "baseline")
    write(tmp_path / "results", "tiny-w8a16-rtn", 10.05, "variant")
    args = [
        "gate",
        "--results",
        str(tmp_path / "results"),
        "--plan",
        str(tmp_path / "plan.yaml"),
        "--track",
        "--nightly-id",
        "2026-11-29",
    ]
    assert main(args) == 0
    assert "logged nightly 2026-11-29" in capsys.readouterr().out
    assert (tmp_path / "state" / "mlflow.db").is_file()

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quantgate/track-test")
    assert experiment.artifact_location.startswith((tmp_path / "state" / "mlartifacts").as_uri())
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags[names.TAG_KIND] for r in runs) == ["nightly", "trend", "trend", "variant", "variant"]
    parent = next(r for r in runs if r.data.tags[names.TAG_KIND] == "nightly")
    assert parent.data.tags[names.TAG_VERDICT] == "pass"
    variant = next(
        r for r in runs if r.data.tags.get(names.TAG_VARIANT) == "good" and r.data.tags[names.TAG_KIND] == "variant"
    )
    assert variant.data.params["suite.perplexity.version"] == "3"
    assert variant.data.metrics["perplexity.perplexity.recovery_pct"] == pytest.approx(100 * 10 / 10.05)

    assert main([*args, "--as-real", "good"]) == 2  # a drill is never recorded
