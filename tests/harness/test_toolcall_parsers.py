"""Tool-call parsers: exact on well-formed output, never raising on garbage."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.toolcall.parsers import parse_hermes, parse_kimi_k2, parser_for

KIMI_MARKERS = st.sampled_from([
    "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>", "<|tool_call_end|>", "functions.get_order:0", '{"order_id":"O-1"}', "{", "}",
])


def test_kimi_two_calls():
    text = (
        "Checking.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_order:0<|tool_call_argument_begin|>"
        '{"order_id":"O-1"}<|tool_call_end|><|tool_call_begin|>functions.get_weather:1<|tool_call_argument_begin|>'
        '{"city":"Oslo"}<|tool_call_end|><|tool_calls_section_end|>'
    )
    turn = parse_kimi_k2(text)
    assert turn.content == "Checking." and not turn.malformed
    assert [(c.name, c.arguments, c.call_id) for c in turn.calls] == [
        ("get_order", {"order_id": "O-1"}, "functions.get_order:0"),
        ("get_weather", {"city": "Oslo"}, "functions.get_weather:1"),
    ]


def test_kimi_malformed_cases_are_flagged():
    base = "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>"
    assert parse_kimi_k2(base + '{"a": 1').malformed  # truncated
    assert parse_kimi_k2(base + "[1]<|tool_call_end|><|tool_calls_section_end|>").malformed  # not an object
    assert parse_kimi_k2("<|tool_calls_section_begin|><|tool_calls_section_end|>").malformed  # empty section
    bad_id = "<|tool_calls_section_begin|><|tool_call_begin|>f<|tool_call_argument_begin|>{}<|tool_call_end|>"
    assert parse_kimi_k2(bad_id + "<|tool_calls_section_end|>").calls[0].error
    assert parse_kimi_k2("just an answer").calls == []


def test_hermes():
    turn = parse_hermes('ok <tool_call>{"name": "get_order", "arguments": {"order_id": "O-1"}}</tool_call>')
    assert turn.content == "ok" and turn.calls[0].name == "get_order" and not turn.malformed
    assert parse_hermes("<tool_call>{nope</tool_call>").malformed
    assert parse_hermes('<tool_call>{"name": 3, "arguments": {}}</tool_call>').malformed


def test_unknown_parser_lists_known():
    try:
        parser_for("nope")
    except KeyError as error:
        assert "hermes" in str(error) and "kimi_k2" in str(error)
    else:
        raise AssertionError("expected KeyError")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(KIMI_MARKERS, st.text(max_size=8)), max_size=12))
def test_kimi_never_raises(pieces):
    turn = parse_kimi_k2("".join(pieces))
    for call in turn.calls:
        assert call.error or isinstance(call.arguments, dict)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["<tool_call>", "</tool_call>", '{"name":"f","arguments":{}}', '"']),
                          st.text(max_size=8)), max_size=12))
def test_hermes_never_raises(pieces):
    parse_hermes("".join(pieces))
