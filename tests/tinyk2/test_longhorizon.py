"""The long-horizon sessions: the committed file is what the generator makes; every session holds at least
200 calls in one conversation, chained calls, state carried across requests and turns without a tool, and
only held-out customers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tinyk2.longhorizon import SESSIONS_FILE, build_sessions, sessions_text
from tinyk2.world import build_world

COMMITTED = Path(__file__).resolve().parents[2] / "suites" / "data" / "tinyk2" / SESSIONS_FILE


@pytest.fixture(scope="module")
def sessions():
    return build_sessions(0)


def test_committed_sessions_equal_a_fresh_build(sessions):
    assert COMMITTED.read_text() == sessions_text(sessions), "run `python -m tinyk2.longhorizon`"


def test_every_session_is_one_conversation_of_200_calls(sessions):
    assert len(sessions) == 3
    for session in sessions:
        messages = session["messages"]
        calls = [c for m in messages for c in m.get("tool_calls", [])]
        answered = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
        assert len(calls) >= 200 and [c["id"] for c in calls] == answered
        assert len(session["tools"]) == 4
        assert {c["function"]["name"] for c in calls} <= {t["function"]["name"] for t in session["tools"]}
        no_tool = [i for i, m in enumerate(messages[:-1]) if m["role"] == "user"
                   and messages[i + 1]["role"] == "assistant" and not messages[i + 1].get("tool_calls")]
        assert len(no_tool) >= 10, "turns that need no tool"


def test_calls_chain_and_state_carries_across_requests(sessions):
    support = sessions[0]["messages"]
    results = [json.loads(m["content"]) for m in support if m["role"] == "tool"]
    refund_ids = [r["refund_id"] for r in results if "refund_id" in r]
    assert len(refund_ids) >= 3 and refund_ids == [f"R-{i}" for i in range(1, len(refund_ids) + 1)]
    # a full refund takes its amount from the get_order result before it, a ticket its customer id
    # from the lookup before it
    chained = 0
    for i, message in enumerate(support):
        for call in message.get("tool_calls", []):
            arguments = json.loads(call["function"]["arguments"])
            before = json.loads(support[i - 1]["content"]) if support[i - 1]["role"] == "tool" else {}
            if call["function"]["name"] == "issue_refund":
                chained += arguments["amount"] == before.get("total")
            if call["function"]["name"] == "create_ticket":
                chained += arguments["customer_id"] == before.get("customer_id")
    assert chained >= 10


def test_sessions_use_only_held_out_customers(sessions):
    world = build_world(0)
    held_out = {p.name for p in world.heldout_customers}
    trained = {p.name for p in world.train_customers}
    names = {json.loads(m["content"]).get("name") for s in sessions for m in s["messages"] if m["role"] == "tool"}
    names.discard(None)
    assert names and names <= held_out and not names & trained
