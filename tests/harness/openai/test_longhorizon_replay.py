"""A recorded agent log (JSONL, OpenAI messages with an endpoint's call ids) replayed with the long-horizon
suite against an endpoint variant: the real vLLM CPU server, against the in-process BF16 baseline."""

from __future__ import annotations

import json
from pathlib import Path

from quantgate.cli import main

ROOT = Path(__file__).resolve().parents[3]
SESSIONS = ROOT / "suites" / "data" / "tinyk2" / "longhorizon_sessions.jsonl"


def recorded_trace(path: Path, steps: int) -> Path:
    """The first `steps` tool-call messages of a shipped session, as an agent's log would hold them."""
    session = json.loads(SESSIONS.read_text().splitlines()[0])
    messages, seen = [], 0
    for message in session["messages"]:
        if message.get("tool_calls"):
            if seen == steps:
                break
            seen += 1
        message = dict(message)
        if message.get("tool_calls"):
            calls = message["tool_calls"]
            message["tool_calls"] = [call | {"id": f"call_{seen}{i:02x}"} for i, call in enumerate(calls)]
        if message["role"] == "tool":
            message["tool_call_id"] = f"call_{seen}{int(message['tool_call_id'].rsplit(':', 1)[1]):02x}"
        messages.append(message)
    path.write_text(json.dumps({"id": "agent-log-1", "tools": session["tools"], "messages": messages}) + "\n")
    return path


def test_recorded_trace_replayed_against_an_endpoint(endpoint, bundled_model: Path, tmp_path: Path) -> None:
    trace = recorded_trace(tmp_path / "agent_log.jsonl", steps=24)
    suite = tmp_path / "longhorizon_trace.yaml"
    suite.write_text(f"kind: longhorizon\nversion: 1\nsessions_file: {trace}\nscore_every: 6\ncontext_tokens: 512\n")
    out = tmp_path / "results"
    argv = ["eval", "--backend", "openai", "--base-url", endpoint.base_url, "--served-model", endpoint.model,
            "--model", str(bundled_model), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--baseline", str(bundled_model), "--threads", "2", "--suite", str(suite)]
    assert main(argv) == 0
    summary = json.loads((out / endpoint.model / "longhorizon_trace" / "summary.json").read_text())
    comparison = {m["name"]: m["value"] for m in summary["comparison"]}
    print("vLLM replay of a recorded trace:", {k: round(v, 5) for k, v in comparison.items()})
    assert {m["name"]: m["value"] for m in summary["metrics"]}["steps_scored"] == 4
    assert comparison["action_kl_mean"] < 1e-3  # the same weights served by vLLM, float32
    assert comparison["disagreements"] <= 1  # a near-tie may flip between the two engines' float32 sums
