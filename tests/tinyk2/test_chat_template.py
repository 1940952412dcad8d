"""The bundled chat template renders as Kimi-K2-Instruct-0905's does, and round-trips tools, calls and results.

What Kimi K2's template writes (docs/bundled-model.md, "Chat template", gives the sources): the tools as
one `tool_declare` system block of compact JSON; a default system prompt when the first message is not a
system message; every message headed by its `name`, else its role, under `<|im_user|>`, `<|im_assistant|>`
or, for any other role, `<|im_system|>`; calls with the ids as given and object arguments as `tojson`;
results as `## Return of ID` then the content; no BOS.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from harness.toolcall.parsers import parse_kimi_k2
from harness.tools.schemas import TOOL_SCHEMAS

SOURCE_TEMPLATE = Path(__file__).resolve().parents[2] / "tools" / "tinyk2" / "chat_template.jinja"
DEFAULT_SYSTEM = "<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>"
TOOLS = [TOOL_SCHEMAS["lookup_customer"], TOOL_SCHEMAS["create_ticket"]]
MESSAGES = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "Open a high priority ticket for ana@web.io: 'Broken lid'."},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "functions.lookup_customer:0", "type": "function",
         "function": {"name": "lookup_customer", "arguments": {"email": "ana@web.io"}}}]},
    {"role": "tool", "tool_call_id": "functions.lookup_customer:0", "name": "lookup_customer",
     "content": '{"customer_id":"C-1","name":"Ana Vel","tier":"gold"}'},
    {"role": "assistant", "content": "Opening it now.", "tool_calls": [
        {"id": "functions.create_ticket:1", "type": "function",
         "function": {"name": "create_ticket", "arguments": json.dumps(
             {"customer_id": "C-1", "priority": "high", "subject": "Broken lid",
              "details": {"category": "product"}}, separators=(",", ":"))}}]},
    {"role": "tool", "tool_call_id": "functions.create_ticket:1", "content": '{"ticket_id":"T-1"}'},
    {"role": "assistant", "content": "Ticket T-1 is open."},
]
# Kimi K2's tool-call guidance example (weather in Beijing), second request: the prompt after one call
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get weather information.",
    "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}}
WEATHER_MESSAGES = [
    {"role": "user", "content": "What's the weather like in Beijing today?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "functions.get_weather:0", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Beijing"}}}]},
    {"role": "tool", "tool_call_id": "functions.get_weather:0", "name": "get_weather",
     "content": '{"weather": "Sunny"}'},
]
WEATHER_PROMPT = (
    '<|im_system|>tool_declare<|im_middle|>[{"type":"function","function":{"name":"get_weather",'
    '"description":"Get weather information.","parameters":{"type":"object","required":["city"],'
    '"properties":{"city":{"type":"string"}}}}}]<|im_end|>'
    + DEFAULT_SYSTEM
    + "<|im_user|>user<|im_middle|>What's the weather like in Beijing today?<|im_end|>"
    "<|im_assistant|>assistant<|im_middle|><|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
    '<|tool_call_argument_begin|>{"city": "Beijing"}<|tool_call_end|><|tool_calls_section_end|><|im_end|>'
    '<|im_system|>get_weather<|im_middle|>## Return of functions.get_weather:0\n{"weather": "Sunny"}<|im_end|>'
    "<|im_assistant|>assistant<|im_middle|>"
)
_BLOCK = re.compile(r"<\|im_(system|user|assistant)\|>([\w-]+)<\|im_middle\|>(.*?)<\|im_end\|>", re.S)


def parse_rendered(text: str) -> tuple[list[dict], list[dict]]:
    """Invert the template: (tools, messages) from a rendered conversation (the default system prompt too)."""
    tools: list[dict] = []
    messages: list[dict] = []
    for marker, name, body in _BLOCK.findall(text):
        if name == "tool_declare":
            tools = json.loads(body)
        elif body.startswith("## Return of "):
            header, content = body.split("\n", 1)
            message = {"role": "tool", "tool_call_id": header.removeprefix("## Return of "), "content": content}
            messages.append(message | ({"name": name} if name != "tool" else {}))
        elif marker == "assistant":
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
            messages.append({"role": name, "content": body})
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


def render(tokenizer, messages, tools=None, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, **kwargs)


def test_bundled_model_carries_the_source_template(bundled_model, tokenizer):
    assert (bundled_model / "chat_template.jinja").read_text() == SOURCE_TEMPLATE.read_text()
    assert tokenizer.chat_template == SOURCE_TEMPLATE.read_text()


def test_renders_kimi_k2_guidance_example_exactly(tokenizer):
    assert render(tokenizer, WEATHER_MESSAGES, [WEATHER_TOOL], add_generation_prompt=True) == WEATHER_PROMPT


def test_tool_declaration_is_one_block_of_compact_json(tokenizer):
    text = render(tokenizer, [{"role": "user", "content": "hi"}], TOOLS)
    declared = json.dumps(TOOLS, separators=(",", ":"), ensure_ascii=False)
    assert text.startswith(f"<|im_system|>tool_declare<|im_middle|>{declared}<|im_end|>{DEFAULT_SYSTEM}")
    assert "# Tools" not in text


def test_default_system_prompt_only_when_the_first_message_is_not_system(tokenizer):
    assert render(tokenizer, [{"role": "user", "content": "hi"}]) == (
        DEFAULT_SYSTEM + "<|im_user|>user<|im_middle|>hi<|im_end|>")
    text = render(tokenizer, MESSAGES[:2])
    assert text.startswith("<|im_system|>system<|im_middle|>You are a support agent.<|im_end|><|im_user|>")
    assert "You are Kimi" not in text


def test_headers_use_the_message_name_and_any_role(tokenizer):
    text = render(tokenizer, [
        {"role": "system", "content": "s"},
        {"role": "_input", "content": "K2VV context"},
        {"role": "user", "name": "ana", "content": "hi"},
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "name": "get_weather", "content": "{}"},
        {"role": "tool", "tool_call_id": "functions.get_weather:1", "content": "{}"},
    ])
    assert text == (
        "<|im_system|>system<|im_middle|>s<|im_end|>"
        "<|im_system|>_input<|im_middle|>K2VV context<|im_end|>"
        "<|im_user|>ana<|im_middle|>hi<|im_end|>"
        "<|im_system|>get_weather<|im_middle|>## Return of functions.get_weather:0\n{}<|im_end|>"
        "<|im_system|>tool<|im_middle|>## Return of functions.get_weather:1\n{}<|im_end|>"
    )


def test_call_arguments_string_as_given_object_as_tojson(tokenizer):
    text = render(tokenizer, MESSAGES)
    assert '<|tool_call_argument_begin|>{"email": "ana@web.io"}<|tool_call_end|>' in text
    assert ('<|tool_call_argument_begin|>{"customer_id":"C-1","priority":"high","subject":"Broken lid",'
            '"details":{"category":"product"}}<|tool_call_end|>') in text
    assert "Opening it now.<|tool_calls_section_begin|><|tool_call_begin|>functions.create_ticket:1" in text


def test_no_bos_in_chats_and_bos_for_plain_text(tokenizer):
    ids = tokenizer.apply_chat_template(MESSAGES[:2], tools=TOOLS, add_generation_prompt=True, tokenize=True,
                                        return_dict=False)
    assert tokenizer.bos_token_id not in ids
    assert tokenizer.decode(ids).endswith("<|im_assistant|>assistant<|im_middle|>")
    assert tokenizer.decode(ids[:1]) == "<|im_system|>"
    assert tokenizer("Plain text.")["input_ids"][0] == tokenizer.bos_token_id


def test_round_trip_with_tools_calls_and_results(tokenizer):
    text = render(tokenizer, MESSAGES, TOOLS)
    tools, messages = parse_rendered(text)
    assert tools == TOOLS
    assert messages == normalised(MESSAGES)
    assert parse_rendered(render(tokenizer, [{"role": "user", "content": "hi"}]))[1][0] == {
        "role": "system", "content": "You are Kimi, an AI assistant created by Moonshot AI."}
