"""Tool-call parsers: the conformance table against vLLM's parsers, linear time, and no crash on garbage.

CONFORMANCE holds one row per case: the calls vLLM's `kimi_k2`, `hermes` and `deepseekv3` tool parsers
return for the output (name, and the arguments a client would decode), written from those parsers'
behaviour and their tests (vllm-project/vllm: vllm/entrypoints/openai/tool_parsers/*, tests/tool_use/).
`NOT_OBJECT` marks a call vLLM passes on whose arguments are not a JSON object: quantgate keeps the call and
marks it malformed. Deliberate differences, each a row with `differs` set:
  - content is stripped of surrounding blanks (vLLM keeps them and gives None for empty content);
  - NaN, Infinity, 1e999, nesting past MAX_NESTING and lone surrogates: vLLM passes them on (hermes: as
    long as Python's json reads them); quantgate marks the call malformed, as no strict JSON client can use it;
  - a lone surrogate anywhere in the output: parsed with U+FFFD in its place, the turn marked malformed.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.toolcall.arguments import MAX_NESTING
from harness.toolcall.k2vv_rules import extract_tool_calls
from harness.toolcall.parsers import (
    EndpointText,
    parse_chat_message,
    parse_deepseek_v3,
    parse_hermes,
    parse_kimi_k2,
    parser_for,
)

SB, SE = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
CB, AB, CE = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"
DSB, DSE = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
DCB, DSEP, DCE = "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>"
NOT_OBJECT = "not an object"


def k2(ident: str, arguments: str, end: str = CE) -> str:
    return f"{CB}{ident}{AB}{arguments}{end}"


def ds(name: str, arguments: str, kind: str = "function") -> str:
    return f"{DCB}{kind}{DSEP}{name}\n```json\n{arguments}\n```{DCE}"


W = '{"city": "Oslo"}'
OSLO = {"city": "Oslo"}

# (case, parser, output, expected [(name, arguments | NOT_OBJECT)], content, malformed, differs)
CONFORMANCE = [
    ("k2 plain text", "kimi_k2", "This is a test", [], "This is a test", False, False),
    ("k2 one call, content before", "kimi_k2", "Checking. " + SB + k2("functions.get_weather:0", W) + SE,
     [("get_weather", OSLO)], "Checking.", False, False),
    ("k2 blanks and newlines around id and arguments", "kimi_k2",
     SB + f" {CB}\nfunctions.get_weather:0 {AB} {W} {CE} " + SE, [("get_weather", OSLO)], "", False, False),
    ("k2 two calls", "kimi_k2", SB + k2("functions.a:0", "{}") + k2("functions.b:1", W) + SE,
     [("a", {}), ("b", OSLO)], "", False, False),
    ("k2 three calls", "kimi_k2", SB + k2("functions.a:0", "{}") + k2("functions.b:1", "{}")
     + k2("functions.c:2", "{}") + SE, [("a", {}), ("b", {}), ("c", {})], "", False, False),
    ("k2 id without functions. prefix", "kimi_k2", SB + k2("get_weather:0", W) + SE,
     [("get_weather", OSLO)], "", False, False),
    ("k2 name starting with a digit", "kimi_k2", SB + k2("functions.3d_render:0", "{}") + SE,
     [("3d_render", {})], "", False, False),
    ("k2 dotted namespace: last part", "kimi_k2", SB + k2("functions.ns.get_weather:0", W) + SE,
     [("get_weather", OSLO)], "", False, False),
    ("k2 hyphenated name", "kimi_k2", SB + k2("functions.get-weather:12", W) + SE,
     [("get-weather", OSLO)], "", False, False),
    ("k2 angle brackets inside arguments", "kimi_k2", SB + k2("functions.html:0", '{"h": "<div>x</div>"}') + SE,
     [("html", {"h": "<div>x</div>"})], "", False, False),
    ("k2 pretty-printed arguments", "kimi_k2", SB + k2("functions.f:0", '{\n  "a": {\n    "b": 1\n  }\n}') + SE,
     [("f", {"a": {"b": 1}})], "", False, False),
    ("k2 non-ASCII arguments", "kimi_k2", SB + k2("functions.search:0", '{"q": "北京天气 ☀"}') + SE,
     [("search", {"q": "北京天气 ☀"})], "", False, False),
    ("k2 invalid JSON kept as a call", "kimi_k2", SB + k2("functions.bad:0", '{"city": "Oslo"') + k2(
        "functions.good:1", W) + SE, [("bad", NOT_OBJECT), ("good", OSLO)], "", True, False),
    ("k2 arguments an array", "kimi_k2", SB + k2("functions.f:0", "[1]") + SE, [("f", NOT_OBJECT)], "", True, False),
    ("k2 id without :IDX skipped, valid neighbour kept", "kimi_k2",
     SB + k2("functions.bad.0", W) + k2("functions.good:1", W) + SE, [("good", OSLO)], "", False, False),
    ("k2 id starting with a colon: empty name", "kimi_k2", SB + k2(":functions.a:01", "{}") + SE, [("", {})], "", False,
     False),
    ("k2 id with only a blank before :IDX", "kimi_k2", SB + k2("  :7", "{}") + SE, [(" ", {})], "", False, False),
    ("k2 id with no index at all", "kimi_k2", SB + k2("f", "{}") + SE, [], "", False, False),
    ("k2 empty section: no calls", "kimi_k2", "Hi" + SB + SE, [], "Hi", False, False),
    ("k2 two sections: both read", "kimi_k2", SB + k2("functions.a:0", "{}") + SE + "and" + SB
     + k2("functions.b:1", "{}") + SE, [("a", {}), ("b", {})], "", False, False),
    ("k2 call missing its end, then another call: the second kept", "kimi_k2",
     SB + f"{CB}functions.a:0{AB}{{}}" + k2("functions.b:1", W) + SE, [("b", OSLO)], "", False, False),
    ("k2 truncated last call dropped", "kimi_k2", SB + k2("functions.a:0", "{}") + f"{CB}functions.b:1{AB}{{\"x\"",
     [("a", {})], "", False, False),
    ("k2 truncated only call: no calls", "kimi_k2", "Let me look." + SB + f"{CB}functions.a:0{AB}{{",
     [], "Let me look.", False, False),
    ("k2 unclosed section, closed call: read", "kimi_k2", SB + k2("functions.a:0", "{}"), [("a", {})], "",
     False, False),
    ("k2 call markers without a section: plain text", "kimi_k2", k2("functions.a:0", "{}"), [],
     k2("functions.a:0", "{}"), False, False),
    ("k2 blank content kept stripped", "kimi_k2", "  \n" + SB + k2("functions.a:0", "{}") + SE, [("a", {})], "",
     False, True),
    ("k2 NaN", "kimi_k2", SB + k2("functions.f:0", '{"x": NaN}') + SE, [("f", NOT_OBJECT)], "", True, True),
    ("k2 Infinity", "kimi_k2", SB + k2("functions.f:0", '{"x": -Infinity}') + SE, [("f", NOT_OBJECT)], "", True, True),
    ("k2 1e999", "kimi_k2", SB + k2("functions.f:0", '{"x": 1e999}') + SE, [("f", NOT_OBJECT)], "", True, True),
    ("k2 nesting past the limit", "kimi_k2", SB + k2("functions.f:0", '{"x":' + "[" * MAX_NESTING
                                                     + "]" * MAX_NESTING + "}") + SE, [("f", NOT_OBJECT)], "", True,
     True),
    ("k2 escaped lone surrogate", "kimi_k2", SB + k2("functions.f:0", '{"x": "\\ud800"}') + SE,
     [("f", NOT_OBJECT)], "", True, True),
    ("k2 raw lone surrogate in content", "kimi_k2", "bad \ud800 text", [], "bad \ufffd text", True, True),
    ("hermes plain text", "hermes", "no call here", [], "no call here", False, False),
    ("hermes one call", "hermes", 'ok <tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>',
     [("f", {"a": 1})], "ok", False, False),
    ("hermes two calls", "hermes", '<tool_call>{"name": "f", "arguments": {}}</tool_call>\n'
     '<tool_call>{"name": "g", "arguments": {"b": 2}}</tool_call>', [("f", {}), ("g", {"b": 2})], "", False, False),
    ("hermes after reasoning, newlines around the JSON, text after", "hermes",
     '好的，我来查。\n</think>\n\n<tool_call>\n{"name": "internet_search", '
     '"arguments": {"question": "5MW 燃气轮机"}}\n</tool_call>\n\n ',
     [("internet_search", {"question": "5MW 燃气轮机"})], "好的，我来查。\n</think>", False, False),
    ("hermes integer and boolean arguments keep their types", "hermes",
     '<tool_call>{"name": "get_product_info", "arguments": {"product_id": 7355608, "inserted": true}}</tool_call>',
     [("get_product_info", {"product_id": 7355608, "inserted": True})], "", False, False),
    ("hermes unclosed call at the end: a call", "hermes", 'x<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n',
     [("f", {"a": 1})], "x", False, False),
    ("hermes invalid JSON: plain text", "hermes", "<tool_call>{nope</tool_call>", [],
     "<tool_call>{nope</tool_call>", False, False),
    ("hermes one bad call spoils all: plain text", "hermes", '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
     "<tool_call>{</tool_call>", [], '<tool_call>{"name": "f", "arguments": {}}</tool_call><tool_call>{</tool_call>',
     False, False),
    ("hermes name not a string: plain text", "hermes", '<tool_call>{"name": 3, "arguments": {}}</tool_call>', [],
     '<tool_call>{"name": 3, "arguments": {}}</tool_call>', False, False),
    ("hermes missing arguments: plain text", "hermes", '<tool_call>{"name": "f"}</tool_call>', [],
     '<tool_call>{"name": "f"}</tool_call>', False, False),
    ("hermes empty call: plain text", "hermes", "<tool_call></tool_call>", [], "<tool_call></tool_call>", False,
     False),
    ("hermes arguments as a JSON string", "hermes", '<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>',
     [("f", NOT_OBJECT)], "", True, False),
    ("hermes NaN (vLLM: a call)", "hermes", '<tool_call>{"name": "f", "arguments": {"x": NaN}}</tool_call>',
     [(None, NOT_OBJECT)], "", True, True),
    ("ds one call", "deepseek_v3", "Sure." + DSB + ds("get_weather", W) + DSE, [("get_weather", OSLO)], "Sure.",
     False, False),
    ("ds two calls on separate lines", "deepseek_v3", DSB + ds("a", "{}") + "\n" + ds("b", W) + DSE,
     [("a", {}), ("b", OSLO)], "", False, False),
    ("ds two calls back to back", "deepseek_v3", DSB + ds("a", "{}") + ds("b", W) + DSE, [("a", {}), ("b", OSLO)],
     "", False, False),
    ("ds multi-line arguments: not a call", "deepseek_v3", DSB + ds("a", '{\n"x": 1}') + DSE, [], "", False, False),
    ("ds type other than function: plain text", "deepseek_v3", DSB + ds("a", "{}", kind="tool") + DSE, [],
     DSB + ds("a", "{}", kind="tool") + DSE, False, False),
    ("ds missing json fence: dropped", "deepseek_v3", DSB + f"{DCB}function{DSEP}a\n{{}}{DCE}" + ds("b", "{}") + DSE,
     [("b", {})], "", False, False),
    ("ds invalid JSON kept as a call", "deepseek_v3", DSB + ds("a", "{") + DSE, [("a", NOT_OBJECT)], "", True, False),
    ("ds no section: plain text", "deepseek_v3", ds("a", "{}"), [], ds("a", "{}"), False, False),
]


@pytest.mark.parametrize(
    "case, parser, output, expected, content, malformed, differs", CONFORMANCE, ids=[row[0] for row in CONFORMANCE]
)
def test_conformance(case, parser, output, expected, content, malformed, differs):
    turn = parser_for(parser)(output)
    got = [(c.name, NOT_OBJECT if c.error else c.arguments) for c in turn.calls]
    assert got == expected
    assert turn.content == content
    assert turn.malformed == malformed


def test_conformance_table_size():
    assert len({row[0] for row in CONFORMANCE}) == len(CONFORMANCE) >= 50
    print(f"conformance rows: {len(CONFORMANCE)}, deliberate differences: {sum(r[-1] for r in CONFORMANCE)}")


def test_kimi_ids_and_dropped_reasons():
    turn = parse_kimi_k2(SB + k2("functions.bad.0", W) + k2(" functions.get_weather:3 ", W) + SE)
    assert [c.call_id for c in turn.calls] == ["functions.get_weather:3"]
    assert turn.dropped == ("call 0: id is not NAME:IDX before the arguments",)
    assert not turn.malformed


def test_malformed_reasons_are_clear():
    deep = parse_kimi_k2(SB + k2("functions.f:0", "[" * 500 + "]" * 500) + SE)
    assert deep.calls[0].error == f"arguments nest deeper than {MAX_NESTING} levels"
    assert "non-finite number NaN" in parse_kimi_k2(SB + k2("functions.f:0", '{"x": NaN}') + SE).calls[0].error
    assert "overflows to infinity" in parse_kimi_k2(SB + k2("functions.f:0", '{"x": 1e999}') + SE).calls[0].error
    assert "lone surrogate" in parse_kimi_k2(SB + k2("functions.f:0", '{"x": "\\udfff"}') + SE).calls[0].error
    assert parse_kimi_k2("a \udc80").error == "output holds invalid Unicode (a lone surrogate)"


def test_chat_message_keeps_endpoint_ids():
    message = {
        "content": "",
        "tool_calls": [
            {"id": "call_9f2c", "type": "function", "function": {"name": "ns.get_weather", "arguments": W}},
            {"id": "functions.f:1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}},
            {"type": "function", "function": {"name": "g", "arguments": "{"}},
        ],
    }
    turn = parse_chat_message(message)
    assert [(c.call_id, c.name, c.arguments) for c in turn.calls[:2]] == [
        ("call_9f2c", "ns.get_weather", OSLO),
        ("functions.f:1", "f", {"a": 1}),
    ]
    assert turn.calls[2].call_id is None and turn.calls[2].error.startswith("arguments are not valid JSON")
    broken = parse_chat_message({"content": "x \udc00", "tool_calls": None})
    assert broken.content == "x \ufffd" and broken.malformed and broken.calls == []
    text = EndpointText("shown", message, "tool_calls")
    assert text == "shown" and text.finish_reason == "tool_calls" and text.message is message


def test_unknown_parser_lists_known():
    with pytest.raises(KeyError, match="deepseek_v3, hermes, kimi_k2"):
        parser_for("nope")


def _seconds(parse, text: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        parse(text)
        best = min(best, time.perf_counter() - start)
    return best


ADVERSARIAL = {
    "kimi_k2 begin markers": (parse_kimi_k2, lambda n: SB + CB * n),
    "kimi_k2 unclosed calls": (parse_kimi_k2, lambda n: SB + f"{CB}functions.f:0{AB}{{}}" * n),
    "kimi_k2 ids without index": (parse_kimi_k2, lambda n: SB + f"{CB}functions.f{AB}{{}}{CE}" * n),
    "hermes open tags": (parse_hermes, lambda n: "<tool_call>" * n),
    "deepseek_v3 begin markers": (parse_deepseek_v3, lambda n: DSB + (DCB + "function" + DSEP) * n),
    "k2vv extraction, unclosed calls": (extract_tool_calls, lambda n: SB + f"{CB}functions.f:0{AB}{{}}" * n + SE),
}


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_linear_time(case):
    """10x the input takes at most about 10x the time (8,000 markers vs 80,000)."""
    parse, build = ADVERSARIAL[case]
    small, large = build(8_000), build(80_000)
    t_small, t_large = _seconds(parse, small), _seconds(parse, large)
    print(f"{case}: {len(small)} chars {t_small * 1e3:.1f} ms, {len(large)} chars {t_large * 1e3:.1f} ms, "
          f"ratio {t_large / t_small:.1f}")
    assert t_large < 20 * t_small + 0.05  # quadratic would be 100x


KIMI_PIECES = st.sampled_from([SB, SE, CB, AB, CE, "functions.get_order:0", "functions.a.b:1", "f:x", '{"o":"O-1"}',
                               "{", "}", "[", "]", '"', "\\", "NaN", "1e999", "\\ud800", "\ud800", " ", "\n", ":", "<"])
HERMES_PIECES = st.sampled_from(["<tool_call>", "</tool_call>", '{"name":"f","arguments":{}}', '{"name":"f",',
                                 '"arguments":', "{", "}", '"', "NaN", "\ud800", "\n"])
DS_PIECES = st.sampled_from([DSB, DSE, DCB, DSEP, DCE, "function", "get_weather", "\n```json\n", "\n```", "{}", "{",
                             "\n", "\ud800"])


def _check(turn) -> None:
    for call in turn.calls:
        assert (call.error is None) == isinstance(call.arguments, dict)
    assert isinstance(turn.content, str)


@settings(max_examples=400, deadline=2000)
@given(st.lists(st.one_of(KIMI_PIECES, st.text(max_size=8)), max_size=30))
def test_kimi_fuzz(pieces):
    _check(parse_kimi_k2("".join(pieces)))


@settings(max_examples=300, deadline=2000)
@given(st.lists(st.one_of(HERMES_PIECES, st.text(max_size=8)), max_size=20))
def test_hermes_fuzz(pieces):
    _check(parse_hermes("".join(pieces)))


@settings(max_examples=300, deadline=2000)
@given(st.lists(st.one_of(DS_PIECES, st.text(max_size=8)), max_size=20))
def test_deepseek_fuzz(pieces):
    _check(parse_deepseek_v3("".join(pieces)))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=2000)
@given(st.dictionaries(st.sampled_from(["content", "tool_calls", "role"]),
                       st.one_of(JSON_VALUES, st.lists(st.dictionaries(
                           st.sampled_from(["id", "type", "function"]),
                           st.one_of(JSON_VALUES, st.fixed_dictionaries(
                               {"name": st.one_of(st.text(max_size=6), JSON_VALUES), "arguments": JSON_VALUES})),
                       ), max_size=3))))
def test_chat_message_fuzz(message):
    """Whatever an endpoint returns as a message: calls are read or malformed, never raised."""
    _check(parse_chat_message(message))
