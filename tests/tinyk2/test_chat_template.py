"""The Kimi K2 style chat template round-trips tools, tool calls and tool results."""

from __future__ import annotations

import json
import re

import pytest
from transformers import AutoTokenizer

from harness.toolcall.parsers import parse_kimi_k2
from harness.tools.schemas import TOOL_SCHEMAS

TOOLS = [TOOL_SCHEMAS["lookup_customer"], TOOL_SCHEMAS["create_ticket"]]
MESSAGES = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "Open a high priority ticket for ana@web.io: 'Broken lid'."},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "functions.lookup_customer:0", "type": "function",
         "function": {"name": "lookup_customer", "arguments": {"email": "ana@web.io"}}}]},
    {"role": "tool", "tool_call_id": "functions.lookup_customer:0",
     "content": '{"customer_id":"C-1","name":"Ana Vel","tier":"gold"}'},
    {"role": "assistant", "content": "Opening it now.", "tool_calls": [
        {"id": "functions.create_ticket:1", "type": "function",
         "function": {"name": "create_ticket", "arguments": json.dumps(
             {"customer_id": "C-1", "priority": "high", "subject": "Broken lid",
              "details": {"category": "product"}}, separators=(",", ":"))}}]},
    {"role": "tool", "tool_call_id": "functions.create_ticket:1", "content": '{"ticket_id":"T-1"}'},
    {"role": "assistant", "content": "Ticket T-1 is open."},
]
_BLOCK = re.compile(r"<\|im_(system|user|assistant)\|>(\w+)<\|im_middle\|>(.*?)<\|im_end\|>", re.S)


def parse_rendered(text: str) -> tuple[list[dict], list[dict]]:
    """Invert the template: (tools, messages) from a rendered conversation."""
    tools: list[dict] = []
    messages: list[dict] = []
    for _marker, role, body in _BLOCK.findall(text):
        if role == "tool_declare":
            tools = json.loads(body)
        elif role == "tool":
            header, content = body.split("\n", 1)
            messages.append({"role": "tool", "tool_call_id": header.removeprefix("## Return of "), "content": content})
        elif role == "assistant":
            turn = parse_kimi_k2(body)
            assert not turn.malformed
            message: dict = {"role": "assistant", "content": turn.content}
            if turn.calls:
                message["tool_calls"] = [
                    {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in turn.calls
                ]
            messages.append(message)
        else:
            messages.append({"role": role, "content": body})
    return tools, messages


def normalised(messages: list[dict]) -> list[dict]:
    out = json.loads(json.dumps(messages))
    for message in out:
        for call in message.get("tool_calls", []):
            if isinstance(call["function"]["arguments"], str):
                call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return out


@pytest.fixture(scope="module")
def tokenizer(bundled_model):
    return AutoTokenizer.from_pretrained(bundled_model)


def test_round_trip_with_tools_calls_and_results(tokenizer):
    text = tokenizer.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False)
    assert text.startswith(tokenizer.bos_token + "<|im_system|>tool_declare<|im_middle|>")
    assert "<|tool_call_begin|>functions.lookup_customer:0<|tool_call_argument_begin|>" in text
    tools, messages = parse_rendered(text)
    assert tools == TOOLS
    assert messages == normalised(MESSAGES)


def test_generation_prompt_and_single_bos(tokenizer):
    ids = tokenizer.apply_chat_template(MESSAGES[:2], tools=TOOLS, add_generation_prompt=True, tokenize=True,
                                        return_dict=False)
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids).endswith("<|im_assistant|>assistant<|im_middle|>")


def test_no_tools_no_declaration(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "tool_declare" not in text
    assert parse_rendered(text) == ([], [{"role": "user", "content": "hi"}])
