"""K2-Vendor-Verifier files: request lines in, results lines out, official results read as a reference.

Requests (one OpenAI chat-completions body per line) are read as K2VV's `read_jsonl` reads them: every
non-blank line is one request whose `data_index` is its 1-based line number; a line that is not JSON, or
that quantgate cannot run (no `messages` list, a message without a string `role`, a tool without
`function.name`), is skipped, counted and named, never fatal. A tool whose schema is invalid is kept (as K2VV
keeps it): calls to it fail validation. Messages with role
`_input` become `system` (K2VV's `prepare_request`). The request's `max_tokens` and `temperature` set that
request's generation (the suite's `k2vv_max_tokens` / `k2vv_temperature` override them, as K2VV's
`--max-tokens` / `--temperature` do); `stream` decides whether raw output is searched for calls, as only
K2VV's streamed raw responses are. Each request is one single-step episode: the first assistant turn is
generated and scored; nothing is executed.

Results are written in K2VV's results format (`write_results`: one line per request with data_index,
request, response, status, finish_reason, tool_calls_valid, ...), so K2VV's summary and F1 read them; a K2VV
results file (Moonshot's official ones included) is read back by `read_results` as a reference.

Write the bundled sample from the held-out scenarios (first turns only, deterministic):

    python -m harness.toolcall.k2vv suites/data/tinyk2/toolcall_scenarios.jsonl \
        suites/data/tinyk2/k2vv_requests.jsonl --limit 20
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.toolcall.loop import Episode
from harness.tools.schemas import TOOL_SCHEMAS

ROLE_INPUT, ROLE_SYSTEM = "_input", "system"
K2VV_RESULTS = "k2vv_results.jsonl"  # the suite's results in K2VV's format, in its measurement folder


@dataclass(frozen=True)
class K2vvRequest:
    data_index: int  # 1-based line number in the file, K2VV's key
    body: dict[str, Any]  # the request as K2VV sends it (`_input` roles mapped to `system`)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]

    @property
    def tools(self) -> list[dict[str, Any]]:
        return self.body.get("tools") or []


@dataclass(frozen=True)
class RequestFile:
    requests: list[K2vvRequest]
    skipped: list[str] = field(default_factory=list)  # "path:line: reason", one per skipped line


def _problem(request: Any) -> str | None:
    """Why quantgate cannot run this request, or None."""
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list) or not request["messages"]:
        return "a request needs a non-empty `messages` list"
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in request["messages"]):
        return "every message needs a string `role`"
    tools = request.get("tools") or []
    if not isinstance(tools, list):
        return "`tools` is not a list"
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return "every tool needs `function.name`"
    return None


def prepare_request(request: dict[str, Any]) -> dict[str, Any]:
    """K2VV's `prepare_request` on the fields quantgate uses: `_input` roles become `system`."""
    body = json.loads(json.dumps(request))
    for message in body["messages"]:
        if message.get("role") == ROLE_INPUT:
            message["role"] = ROLE_SYSTEM
    return body


def _lines(path: Path) -> list[str]:
    """The file's lines as K2VV iterates them (text mode: universal newlines only, not str.splitlines)."""
    with open(path, encoding="utf-8") as handle:
        return list(handle)


def read_requests(path: Path) -> RequestFile:
    requests, skipped = [], []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            skipped.append(f"{path}:{number}: not JSON: {exc.msg}")
            continue
        problem = _problem(request)
        if problem is not None:
            skipped.append(f"{path}:{number}: {problem}")
            continue
        requests.append(K2vvRequest(number, prepare_request(request)))
    return RequestFile(requests, skipped)


def request_episode(request: K2vvRequest, index: int, sample: int, *, max_tokens: int | None = None,
                    temperature: float | None = None) -> Episode:
    """One single-step episode; `max_tokens` / `temperature` override the request's own, as K2VV's CLI does."""
    body = request.body
    return Episode(
        episode_id=f"request-{index:04d}",
        sample=sample,
        tools=request.tools,
        messages=json.loads(json.dumps(request.messages)),
        max_steps=1,
        environment=None,
        data_index=request.data_index,
        max_new_tokens=max_tokens if max_tokens is not None else body.get("max_tokens"),
        temperature=temperature if temperature is not None else body.get("temperature"),
        stream=bool(body.get("stream", False)),
    )


def result_line(request: K2vvRequest, row: dict[str, Any], model: str) -> dict[str, Any]:
    """A row's first turn as one line of K2VV's results file."""
    k2vv = row["k2vv"]
    body = request.body | {"model": model}
    return {
        "data_index": request.data_index,
        "request": body,
        "extra_body": {},
        "response": {
            "id": f"quantgate-{row['id']}-{row['sample']}",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": k2vv["message"], "finish_reason": k2vv["finish_reason"]}],
            "usage": None,
        },
        "status": "success",
        "finish_reason": k2vv["finish_reason"],
        "tool_calls_valid": k2vv["tool_calls_valid"],
        "last_run_at": None,
        "duration_ms": None,
        "hash": hashlib.md5(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest(),
    }


def write_results(path: Path, lines: list[dict[str, Any]]) -> None:
    """K2VV's results file. `path` lies in a suite's output folder, which the caller renames into
    place when the suite has finished; the folder is made here if the caller has not."""
    text = "".join(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n" for line in lines)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class ResultsFile:
    finish_reasons: dict[int, str | None]  # data_index -> finish_reason
    records: list[dict[str, Any]]  # finish_reason and tool_calls_valid per line
    skipped: list[str] = field(default_factory=list)


def read_results(path: Path) -> ResultsFile:
    """A K2VV results file; a line that is not JSON or lacks `data_index` is skipped and named."""
    finish_reasons: dict[int, str | None] = {}
    records, skipped = [], []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            skipped.append(f"{path}:{number}: not JSON: {exc.msg}")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("data_index"), int):
            skipped.append(f"{path}:{number}: no integer `data_index`")
            continue
        finish_reasons[record["data_index"]] = record.get("finish_reason")
        records.append({key: record.get(key) for key in ("finish_reason", "tool_calls_valid")})
    return ResultsFile(finish_reasons, records, skipped)


def requests_from_scenarios(scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first turn of each scenario as a chat-completions request body."""
    return [
        {
            "messages": s["messages"],
            "tools": [TOOL_SCHEMAS[name] for name in s["tools"]],
            "tool_choice": "auto",
            "temperature": 0,
            "max_tokens": 128,
            "stream": True,
        }
        for s in scenarios
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.toolcall.k2vv", description=__doc__.splitlines()[0]
    )
    parser.add_argument("scenarios", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    scenarios = [json.loads(line) for line in args.scenarios.read_text().splitlines() if line.strip()]
    lines = [json.dumps(r) for r in requests_from_scenarios(scenarios[: args.limit])]
    args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
