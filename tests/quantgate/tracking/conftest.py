"""An embedded sqlite store (the real `mlflow server` fixture is in tests/conftest.py), and synthetic
nightlies built from Metric values: a baseline "tiny", a real variant "good" and a canary "bad"."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from quantgate.core.metrics import Metric
from quantgate.core.record import ResultRecord, write_record
from quantgate.plan import Plan
from quantgate.tracking.store import TrackingStore


@pytest.fixture(scope="session")
def embedded_store(tmp_path_factory: pytest.TempPathFactory) -> TrackingStore:
    state = tmp_path_factory.mktemp("state")
    return TrackingStore(f"sqlite:///{state / 'mlflow.db'}", state / "mlartifacts")


@pytest.fixture(params=["server", "embedded"])
def store(request: pytest.FixtureRequest) -> TrackingStore:
    if request.param == "server":
        return TrackingStore(request.getfixturevalue("mlflow_server"), None)
    return request.getfixturevalue("embedded_store")


@pytest.fixture
def make_plan() -> Callable[..., Plan]:
    """make_plan(name=None) -> a plan with a unique name (one MLflow experiment per test)."""
    return _plan


def _plan(name: str | None = None) -> Plan:
    return Plan.model_validate(
        {
            "version": 1,
            "name": name or f"test-{uuid.uuid4().hex[:8]}",
            "model": "models/tiny",
            "variants": [
                {"name": "good", "scheme": "w4a16-g128", "method": "rtn", "group": "int4"},
                {"name": "bad", "scheme": "w2a16-g32", "method": "rtn", "group": "int4", "canary": True},
            ],
            "suites": ["perplexity", "benchmark"],
            "gates": [{"metric": "perplexity.perplexity", "min_recovery": 95}],
        }
    )


def _result(
    folder: Path, checkpoint: str, suite: str, metrics: list[Metric], comparison: list[Metric], role: str
) -> ResultRecord:
    folder = folder / checkpoint / suite
    folder.mkdir(parents=True, exist_ok=True)
    record = ResultRecord.of(checkpoint, suite, 1, metrics, comparison, role)
    write_record(folder, record)
    (folder / "samples.jsonl").write_text('{"id": 0, "nll": 2.3}\n{"id": 1, "nll": 2.2}\n')
    return record.at(folder)


@pytest.fixture
def nightly_results(tmp_path: Path) -> Callable[..., list[ResultRecord]]:
    """nightly_results(good_ppl=10.5, tag="a"): baseline ppl 10 / acc 0.8, good and bad variants."""

    def make(good_ppl: float = 10.5, tag: str = "a") -> list[ResultRecord]:
        root = tmp_path / f"results-{tag}"
        out = []
        for checkpoint, ppl, acc, role in [
            ("tiny", 10.0, 0.8, "baseline"),
            ("tiny-w4a16-g128-rtn", good_ppl, 0.79, "variant"),
            ("tiny-w2a16-g32-rtn", 30.0, 0.5, "variant"),
        ]:
            variant = role == "variant"
            out.append(
                _result(
                    root,
                    checkpoint,
                    "perplexity",
                    [Metric("perplexity", ppl, "lower", 0.05, n=500)],
                    [Metric("kl_mean", 0.02, "lower", 0.001, "nats/token", 500)] if variant else [],
                    role,
                )
            )
            out.append(
                _result(
                    root,
                    checkpoint,
                    "benchmark",
                    [Metric("acc", acc, "higher", 0.02, n=400)],
                    [
                        Metric("acc_lost", 7.0, "lower", unit="items", n=400),
                        Metric("acc_mcnemar_p", 0.4, "none", n=12),
                        Metric("pass^2", 0.7, "higher", n=12),
                    ]
                    if variant
                    else [],
                    role,
                )
            )
        return out

    return make
