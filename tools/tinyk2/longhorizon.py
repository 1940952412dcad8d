"""Long-horizon sessions: one conversation of at least 200 tool calls in the tinyk2 tool environment.

    PYTHONPATH=tools python -m tinyk2.longhorizon [--out suites/data/tinyk2/longhorizon_sessions.jsonl]

A session is one shop state and one `ToolEnvironment` that carries across the whole conversation:
a user asks for one thing after another (the scenario intents of corpus_intents, and about one turn
in seven that needs no tool, from corpus_smalltalk); chained intents feed a call's result into the
next call (look up, then refund; search, then add to cart; read an order, then convert its total),
and what an intent changes (refunds, cart, tickets, meetings) is what later intents see. An intent
that cannot run on the state as it has become (an order already refunded, a slot already taken)
is drawn again; its calls never reach the session.

Each line is an OpenAI chat request with its recorded trajectory, the same shape as an imported
agent log: {"id", "tools": [OpenAI tool schema], "messages": [...], "initial_state"} (the environment's
state at the start, which a free-running replay executes calls against), assistant tool calls with
`function.arguments` as a JSON string and Kimi K2 call ids (`functions.NAME:IDX`, IDX counting the
calls of one user request, as the bundled model's training chats do). Sessions draw customers from the
held-out name pool (never in training, see tinyk2.world) and training chats are single requests, so no
session is in the training data.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
from pathlib import Path
from typing import Any

from harness.tools.environment import State, ToolEnvironment
from harness.tools.schemas import TOOL_SCHEMAS
from tinyk2.corpus_arith import heldout_triples
from tinyk2.corpus_facts import split_facts
from tinyk2.corpus_intents import TOOL_INTENTS, Context
from tinyk2.corpus_shop import Dialogue, random_shop_state
from tinyk2.corpus_smalltalk import NO_TOOL_INTENTS
from tinyk2.world import build_world

SESSIONS_FILE = "longhorizon_sessions.jsonl"
NO_TOOL_TURN_SHARE = 0.15
# Each session declares four tools, as training chats declare three or four, and draws the intents
# those tools serve.
SESSION_TOOLS: dict[str, list[str]] = {
    "support": ["lookup_customer", "get_order", "issue_refund", "create_ticket"],
    "shop": ["search_products", "add_to_cart", "get_order", "convert_currency"],
    "office": ["get_weather", "schedule_meeting", "convert_currency", "get_order"],
}
INTENT_TOOLS: dict[str, set[str]] = {
    "lookup_customer": {"lookup_customer"},
    "lookup_unknown": {"lookup_customer"},
    "order_status": {"get_order"},
    "refund_full": {"get_order", "issue_refund"},
    "refund_partial": {"issue_refund"},
    "open_ticket": {"lookup_customer", "create_ticket"},
    "search_products": {"search_products"},
    "search_then_add": {"search_products", "add_to_cart"},
    "add_to_cart": {"add_to_cart"},
    "weather": {"get_weather"},
    "weather_compare": {"get_weather"},
    "schedule_meeting": {"schedule_meeting"},
    "convert": {"convert_currency"},
    "order_in_currency": {"get_order", "convert_currency"},
}
# What an intent raises when the state no longer allows it (an error result read as a success).
NOT_RUNNABLE = (KeyError, IndexError, StopIteration, ValueError)


def _turn_messages(dialogue: Dialogue, user_text: str, answer: str) -> list[dict[str, Any]]:
    """One request as OpenAI messages; call ids count from 0 in each request, as in training chats."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": user_text}]
    index = 0
    for turn in dialogue.turns:
        calls, results = [], []
        for name, arguments, result in turn:
            call_id = f"functions.{name}:{index}"
            index += 1
            arguments_json = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
            calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments_json}})
            results.append({"role": "tool", "tool_call_id": call_id, "name": name,
                            "content": json.dumps(result, separators=(",", ":"), ensure_ascii=False)})
        messages.append({"role": "assistant", "content": "", "tool_calls": calls})
        messages.extend(results)
    messages.append({"role": "assistant", "content": answer})
    return messages


def build_session(seed: int, index: int, kind: str, min_calls: int) -> dict[str, Any]:
    """Session `index` of `seed`: intents on one carried state until it holds `min_calls` calls."""
    rng = random.Random(f"tinyk2-longhorizon:{seed}:{index}")
    world = build_world(seed)
    qa_facts, _ = split_facts(world, seed)
    excluded = frozenset(heldout_triples(seed))
    people = world.heldout_customers
    tools = SESSION_TOOLS[kind]
    intents = sorted(name for name, needs in INTENT_TOOLS.items() if needs <= set(tools))
    state: State = random_shop_state(rng, world, people)
    initial_state = copy.deepcopy(state)
    messages: list[dict[str, Any]] = []
    calls = 0
    while calls < min_calls:
        no_tool = rng.random() < NO_TOOL_TURN_SHARE
        name = rng.choice(sorted(NO_TOOL_INTENTS) if no_tool else intents)
        intent = NO_TOOL_INTENTS[name] if no_tool else TOOL_INTENTS[name]
        dialogue = Dialogue(ToolEnvironment(state))
        try:
            outcome = intent(Context(rng, world, state, people, qa_facts, excluded), dialogue)
        except NOT_RUNNABLE:
            continue
        messages += _turn_messages(dialogue, outcome.user_text, outcome.answer)
        calls += sum(len(turn) for turn in dialogue.turns)
        state = dialogue.env.state()
    return {"id": f"longhorizon-{index:02d}-{kind}", "tools": [TOOL_SCHEMAS[name] for name in tools],
            "messages": messages, "initial_state": initial_state}


def build_sessions(seed: int = 0, min_calls: int = 200) -> list[dict[str, Any]]:
    return [build_session(seed, index, kind, min_calls) for index, kind in enumerate(SESSION_TOOLS)]


def sessions_text(sessions: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(session, sort_keys=True, ensure_ascii=False) + "\n" for session in sessions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyk2.longhorizon", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("suites/data/tinyk2") / SESSIONS_FILE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-calls", type=int, default=200)
    args = parser.parse_args(argv)
    args.out.write_text(sessions_text(build_sessions(args.seed, args.min_calls)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
