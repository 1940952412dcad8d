"""K2-Vendor-Verifier request files: one OpenAI chat-completions request body per JSON line.

Only `messages` and `tools` are read (the other request fields, e.g. `model`, `temperature`,
`tool_choice`, are the serving side's business). Each request is one single-step episode: the
first assistant turn is generated, its call-or-not decision recorded and its calls validated against
the request's own tool schemas; nothing is executed.

Write the bundled sample from the held-out scenarios (first turns only, deterministic):

    python -m harness.toolcall.k2vv suites/data/tinyk2/toolcall_scenarios.jsonl \
        suites/data/tinyk2/k2vv_requests.jsonl --limit 20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from harness.toolcall.loop import Episode
from harness.tools.schemas import TOOL_SCHEMAS


def _checked_request(request: Any, where: str) -> dict[str, Any]:
    if (
        not isinstance(request, dict)
        or not isinstance(request.get("messages"), list)
        or not request["messages"]
    ):
        raise ValueError(f"{where}: a request needs a non-empty `messages` list")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in request["messages"]):
        raise ValueError(f"{where}: every message needs a string `role`")
    tools = request.get("tools") or []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError(f"{where}: every tool needs `function.name`")
        try:
            Draft202012Validator.check_schema(function.get("parameters") or {"type": "object"})
        except SchemaError as exc:
            raise ValueError(
                f"{where}: tool {function['name']!r} has an invalid schema: {exc.message}"
            ) from exc
    return {"messages": request["messages"], "tools": tools}


def read_requests(path: Path) -> list[dict[str, Any]]:
    """`{"messages", "tools"}` of each non-blank line; a malformed line is an input error naming the line."""
    requests = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if line.strip():
            try:
                request = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc.msg}") from exc
            requests.append(_checked_request(request, f"{path}:{number}"))
    return requests


def request_episode(request: dict[str, Any], index: int, sample: int) -> Episode:
    return Episode(
        episode_id=f"request-{index:04d}",
        sample=sample,
        tools=request["tools"],
        messages=json.loads(json.dumps(request["messages"])),
        max_steps=1,
        environment=None,
    )


def requests_from_scenarios(scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first turn of each scenario as a chat-completions request body."""
    return [
        {
            "messages": s["messages"],
            "tools": [TOOL_SCHEMAS[name] for name in s["tools"]],
            "tool_choice": "auto",
            "temperature": 0,
            "max_tokens": 128,
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
