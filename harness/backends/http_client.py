"""A robust JSON-over-HTTP client for OpenAI-compatible servers.

- bounded concurrency: `post_many` runs at most `concurrency` requests at once (threads);
- per-request timeout (connect and read);
- retries with exponential backoff and full jitter on 429, 5xx and connection errors/timeouts
  (delay_n = uniform(0, min(max_delay, base_delay * 2**n)), `Retry-After` honoured when larger);
- an on-disk journal (JSON lines, one per received response, flushed and fsynced): a request whose
  response is in the journal is not sent again, so a rerun repeats only the requests that failed and
  a server that dies mid-suite loses nothing already received. The key is the sha256 of the path and
  the canonical JSON body; timing requests (`journal=False`) are never journalled;
- streaming (`"stream": true`): server-sent events are reassembled into the non-streaming response
  shape (completions: text and logprobs; chat: content and tool calls), with arrival times kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from quantgate.core.redact import redact

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class EndpointError(RuntimeError):
    """Requests that still failed after every retry (the others were journalled). A server that echoes
    the API key in its error body does not get it into the message: keys and tokens are redacted."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # tries per request, the first included
    base_delay: float = 0.5  # seconds
    max_delay: float = 20.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        delay = rng.uniform(0.0, min(self.max_delay, self.base_delay * 2**attempt))
        return max(delay, min(retry_after or 0.0, self.max_delay))


def request_key(path: str, body: dict[str, Any]) -> str:
    canonical = json.dumps({"path": path, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Journal:
    """JSON lines {"key", "response"}; appended under a lock, fsynced; a torn last line is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.entries: dict[str, dict] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self.entries[row["key"]] = row["response"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by a kill
        path.parent.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, response: dict) -> None:
        line = json.dumps({"key": key, "response": response}, sort_keys=True) + "\n"
        with self.lock:
            self.entries[key] = response
            with self.path.open("a") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())


def _sse_events(response: requests.Response) -> Iterator[tuple[float, dict]]:
    for raw in response.iter_lines(decode_unicode=True):
        if not raw or not raw.startswith("data:"):
            continue
        data = raw[len("data:") :].strip()
        if data == "[DONE]":
            return
        yield time.perf_counter(), json.loads(data)


def _merge_logprobs(target: dict, chunk: dict | None) -> None:
    if not chunk:
        return
    for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        if chunk.get(name) is not None:
            target.setdefault(name, []).extend(chunk[name])


def reassemble(events: list[tuple[float, dict]], started: float) -> dict:
    """Streamed chunks -> one response in the non-streaming shape, plus `timing` (seconds from `started`):
    `chunk_times` [arrival of each chunk that carried text or a tool call], `end`."""
    choices: dict[int, dict] = {}
    response: dict[str, Any] = {}
    chunk_times: list[float] = []
    for arrived, event in events:
        response.setdefault("id", event.get("id"))
        response.setdefault("model", event.get("model"))
        if event.get("usage"):
            response["usage"] = event["usage"]
        carried = False
        for part in event.get("choices", []):
            choice = choices.setdefault(part["index"], {"index": part["index"], "finish_reason": None})
            if part.get("finish_reason"):
                choice["finish_reason"] = part["finish_reason"]
            if "text" in part:  # /v1/completions
                choice["text"] = choice.get("text", "") + part["text"]
                carried |= bool(part["text"])
                if part.get("logprobs"):
                    _merge_logprobs(choice.setdefault("logprobs", {}), part["logprobs"])
            delta = part.get("delta")
            if delta is not None:  # /v1/chat/completions
                message = choice.setdefault("message", {"role": "assistant", "content": None})
                if delta.get("content"):
                    message["content"] = (message["content"] or "") + delta["content"]
                    carried = True
                for call in delta.get("tool_calls") or []:
                    calls = message.setdefault("tool_calls", [])
                    while len(calls) <= call.get("index", 0):
                        calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                    slot = calls[call.get("index", 0)]
                    slot["id"] = call.get("id") or slot["id"]
                    function = call.get("function") or {}
                    slot["function"]["name"] += function.get("name") or ""
                    slot["function"]["arguments"] += function.get("arguments") or ""
                    carried = True
        if carried:
            chunk_times.append(arrived - started)
    response["choices"] = [choices[i] for i in sorted(choices)]
    end = events[-1][0] - started if events else 0.0
    response["timing"] = {"chunk_times": chunk_times, "end": end}
    return response


class HttpClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 300.0,
        retry: RetryPolicy | None = None,
        journal: Path | None = None,
        seed: int = 0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.concurrency, self.timeout = concurrency, timeout
        self.retry = retry or RetryPolicy()
        self.journal = Journal(journal) if journal else None
        self.rng = random.Random(seed)  # jitter only; never changes what is asked
        self.session = requests.Session()
        self.sent = 0  # HTTP requests sent, retries included (rerun tests read it)

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.base_url + path, headers=self.headers, timeout=self.timeout)

    def _once(self, path: str, body: dict) -> dict:
        self.sent += 1
        started = time.perf_counter()
        stream = bool(body.get("stream"))
        with self.session.post(
            self.base_url + path, json=body, headers=self.headers, timeout=self.timeout, stream=stream
        ) as response:
            if response.status_code >= 400:
                raise _HttpStatus(response.status_code, response.text[:300], response.headers.get("Retry-After"))
            if stream:
                return reassemble(list(_sse_events(response)), started)
            payload = response.json()
            payload["timing"] = {"end": time.perf_counter() - started}
            return payload

    def post(self, path: str, body: dict, *, journal: bool = True) -> dict:
        """One request, retried; the journal is read first and written after (unless journal=False)."""
        key = request_key(path, body)
        if journal and self.journal and (stored := self.journal.get(key)) is not None:
            return stored
        for attempt in range(self.retry.attempts):
            try:
                response = self._once(path, body)
                break
            except _HttpStatus as error:
                if error.status not in RETRY_STATUS or attempt == self.retry.attempts - 1:
                    raise EndpointError(f"POST {self.base_url}{path}: HTTP {error.status}: {error.text}") from None
                time.sleep(self.retry.delay(attempt, self.rng, error.retry_after))
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
                if attempt == self.retry.attempts - 1:
                    raise EndpointError(f"POST {self.base_url}{path}: {type(error).__name__}: {error}") from None
                time.sleep(self.retry.delay(attempt, self.rng))
        if journal and self.journal:
            self.journal.put(key, response)
        return response

    def post_many(
        self, path: str, bodies: list[dict], *, journal: bool = True, concurrency: int | None = None
    ) -> list[dict]:
        """All requests, at most `concurrency` at once; each finished one is journalled as it arrives.
        Failures are raised together after every request has been tried."""
        workers = max(1, min(concurrency or self.concurrency, len(bodies) or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(self.post, path, body, journal=journal) for body in bodies]
        results, failures = [], []
        for future in futures:
            try:
                results.append(future.result())
            except EndpointError as error:
                failures.append(str(error))
                results.append({})
        if failures:
            raise EndpointError(
                f"{len(failures)} of {len(bodies)} requests failed after retries (the other responses are "
                f"journalled; a rerun repeats only the failed ones). First: {failures[0]}"
            )
        return results


class _HttpStatus(Exception):
    def __init__(self, status: int, text: str, retry_after: str | None) -> None:
        super().__init__(status)
        self.status, self.text = status, text
        try:
            self.retry_after = float(retry_after) if retry_after else None
        except ValueError:
            self.retry_after = None
