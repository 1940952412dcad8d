"""The HTTP client against a real flaky server on 127.0.0.1 (stdlib http.server): retries on 429/5xx and
dropped connections, Retry-After, the journal (a rerun repeats only what failed), streamed reassembly."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.backends.http_client import EndpointError, HttpClient, RetryPolicy

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


class Flaky(BaseHTTPRequestHandler):
    """POST bodies {"id": N, "fail": [codes...]} fail with those codes in turn, then answer; "drop" closes the
    connection instead; "dead": always 503. stream: two SSE chunks."""

    seen: dict[int, int] = {}
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            attempt = self.seen.get(body["id"], 0)
            self.seen[body["id"]] = attempt + 1
        failures = body.get("fail", [])
        if body.get("dead") or attempt < len(failures):
            code = 503 if body.get("dead") else failures[attempt]
            if code == "drop":
                self.connection.close()
                return
            self.send_response(code)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for text in ("Hel", "lo"):
                chunk = {"id": "x", "choices": [{"index": 0, "text": text, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            return
        payload = json.dumps({"id": body["id"], "attempts": attempt + 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def flaky_url() -> Iterator[str]:
    Flaky.seen = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_retries_429_5xx_and_dropped_connections(flaky_url: str) -> None:
    client = HttpClient(flaky_url, retry=FAST, concurrency=3)
    bodies = [{"id": 1, "fail": [429, 500]}, {"id": 2, "fail": ["drop"]}, {"id": 3}]
    answers = client.post_many("/v1/x", bodies)
    assert [a["attempts"] for a in answers] == [3, 2, 1]


def test_client_error_is_not_retried(flaky_url: str) -> None:
    client = HttpClient(flaky_url, retry=FAST)
    with pytest.raises(EndpointError, match="HTTP 400"):
        client.post("/v1/x", {"id": 4, "fail": [400]})
    assert Flaky.seen[4] == 1


def test_journal_rerun_repeats_only_failed_requests(flaky_url: str, tmp_path: Path) -> None:
    journal = tmp_path / "requests.jsonl"
    bodies = [{"id": 10}, {"id": 11, "dead": True}, {"id": 12}]
    with pytest.raises(EndpointError, match="1 of 3 requests failed"):
        HttpClient(flaky_url, retry=FAST, journal=journal).post_many("/v1/x", bodies)
    assert Flaky.seen == {10: 1, 11: FAST.attempts, 12: 1}
    rerun = HttpClient(flaky_url, retry=FAST, journal=journal)
    answers = rerun.post_many("/v1/x", [bodies[0], {"id": 11}, bodies[2]])  # the server recovered for 11
    assert [a["id"] for a in answers] == [10, 11, 12] and rerun.sent == 1
    assert Flaky.seen == {10: 1, 11: FAST.attempts + 1, 12: 1}
    with journal.open("a") as handle:  # a line torn by a kill is ignored
        handle.write('{"key": "abc", "respo')
    assert HttpClient(flaky_url, journal=journal).post_many("/v1/x", bodies[:1])[0]["id"] == 10


def test_stream_is_reassembled(flaky_url: str) -> None:
    answer = HttpClient(flaky_url, retry=FAST).post("/v1/x", {"id": 20, "stream": True, "fail": [502]})
    assert answer["choices"][0]["text"] == "Hello"
    assert len(answer["timing"]["chunk_times"]) == 2
