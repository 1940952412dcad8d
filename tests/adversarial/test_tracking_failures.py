"""Tracking failures of every kind keep the record: the nightly still ends with its report and
verdict, says what went to the outbox, and `sync` uploads it once the server is back.

A half-up server is a small loopback HTTP server: GET /health answers 200, every other request 503
(what a tracking server behind a proxy returns when its backend is down). The upload later goes to
the real `mlflow server` of the test session.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow import MlflowClient

from quantgate.tracking import names, outbox
from tests.adversarial.conftest import dead_pid

PLAN = """\
version: 1
name: half-up
model: {model}
variants:
  - {{name: int4, scheme: w4a16-g128, method: rtn, group: int4}}
suites: [ppl.yaml]
gates:
  - {{metric: ppl.perplexity, min_recovery: 90}}
"""
SUITE = """\
kind: perplexity
version: 1
data: {data}
context_length: 48
stride: 48
top_k: 8
batch_size: 8
max_documents: 2
"""
API_KEY = "sk-adversarial-0123456789"


class HalfUp(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        healthy = self.path.rstrip("/") == "/health"
        body = b"OK" if healthy else f'{{"error": "backend down", "echo": "Bearer {API_KEY}"}}'.encode()
        self.send_response(200 if healthy else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


class Stalled(HalfUp):
    """Healthy, but every API request hangs past the client's timeout."""

    def _answer(self) -> None:
        if self.path.rstrip("/") != "/health":
            time.sleep(STALL_S)
        super()._answer()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


STALL_S = 3.0


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def half_up_server() -> Iterator[str]:
    yield from _serve(HalfUp)


@pytest.fixture
def stalled_server() -> Iterator[str]:
    yield from _serve(Stalled)


@pytest.fixture
def nightly(tmp_path: Path, bundled_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from quantgate.core.shipped import shipped_root

    monkeypatch.setenv("QUANTGATE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("QUANTGATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VENDOR_API_KEY", API_KEY)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    models = tmp_path / "models"  # the variant is built beside the model: a private folder
    models.mkdir()
    (models / "kimi-k2-tiny").symlink_to(bundled_model)
    (tmp_path / "ppl.yaml").write_text(SUITE.format(data=shipped_root() / "data" / "tinyk2" / "heldout_text.jsonl"))
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(model=models / "kimi-k2-tiny"))
    return plan


def test_half_up_server_nightly_finishes_outbox_then_sync_uploads(
    run_cli, nightly, half_up_server, mlflow_server, tmp_path
):
    argv = ["nightly", "--plan", nightly, "--reports", tmp_path / "reports", "--nightly-id", "n-half-up",
            "--tracking-uri", half_up_server, "--threads", "2"]  # fmt: skip
    killed = tmp_path / "state" / "results" / f".scratch-{dead_pid()}"  # what a killed nightly leaves
    (killed / "kimi-k2-tiny").mkdir(parents=True)
    result = run_cli(argv)
    assert result.code == 0, result.err[-5:]
    assert "verdict: PASS" in result.out and not killed.exists()
    assert (tmp_path / "reports" / "half-up" / "n-half-up" / "report.html").is_file()
    [entry] = outbox.pending(tmp_path / "state")
    assert f"kept in {entry}" in result.out and "503" in result.out, result.out  # the final path
    assert API_KEY not in result.out + "\n".join(result.err)  # the echoed key is redacted
    assert (entry / "report" / "report.html").is_file()
    assert not list((tmp_path / "state" / "results").glob(".scratch-*"))

    synced = run_cli(["sync", "--tracking-uri", mlflow_server])
    assert synced.code == 0, synced.out
    assert outbox.pending(tmp_path / "state") == []
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(names.experiment_name("half-up"))
    parents = client.search_runs(
        [experiment.experiment_id], f"tags.`{names.TAG_NIGHTLY}` = 'n-half-up' and tags.`{names.TAG_KIND}` = 'nightly'"
    )
    assert len(parents) == 1 and parents[0].data.tags[names.TAG_VERDICT] == "pass"


def test_sync_skips_and_names_a_corrupt_entry_and_uploads_the_rest(
    run_cli, nightly, half_up_server, mlflow_server, tmp_path
):
    from quantgate.core.record import ResultRecord
    from quantgate.plan import load_plan
    from quantgate.tracking.nightly_record import nightly_record
    from quantgate.tracking.publish import deliver
    from quantgate.tracking.store import TrackingStore

    state = tmp_path / "state"
    plan = load_plan(nightly).model_copy(update={"name": "sync-corrupt"})
    results: list[ResultRecord] = []
    first = deliver(TrackingStore(half_up_server, None), nightly_record(plan, results, "n-a", "pass"), state)
    second = deliver(TrackingStore(half_up_server, None), nightly_record(plan, results, "n-b", "pass"), state)
    assert first.runs is None and second.runs is None and "503" in first.message
    (first.outbox_entry / outbox.RECORD_NAME).write_text("{not json")
    result = run_cli(["sync", "--tracking-uri", mlflow_server])
    assert result.code == 1  # one entry left behind, named
    assert f"skipped unreadable outbox entry {first.outbox_entry / outbox.RECORD_NAME}" in result.out
    assert outbox.pending(state) == [first.outbox_entry]
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(names.experiment_name("sync-corrupt"))
    tags = [r.data.tags.get(names.TAG_NIGHTLY) for r in client.search_runs([experiment.experiment_id])]
    assert "n-b" in tags and "n-a" not in tags
    json.dumps(tags)


def test_a_server_that_times_out_keeps_the_record(nightly, stalled_server, tmp_path, monkeypatch):
    from quantgate.plan import load_plan
    from quantgate.tracking.nightly_record import nightly_record
    from quantgate.tracking.publish import deliver
    from quantgate.tracking.store import TrackingStore

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    record = nightly_record(load_plan(nightly), [], "n-stalled", "pass")
    delivery = deliver(TrackingStore(stalled_server, None), record, tmp_path / "state")
    assert delivery.runs is None and "did not take the record" in delivery.message
    assert outbox.pending(tmp_path / "state") == [delivery.outbox_entry]
