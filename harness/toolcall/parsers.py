"""Parse an assistant turn's raw text into content and tool calls, as vLLM's tool parsers do.

Three syntaxes, chosen per model (explicit registry, `parser_for`), each agreeing with the vLLM parser of
the same name on which calls a response holds (tests/harness/test_toolcall_parsers.py keeps the conformance table):
  kimi_k2:    <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>
              {json}<|tool_call_end|>...<|tool_calls_section_end|>
              Once a section opens, every closed call anywhere in the text counts (all sections); a call's id
              must end in `:IDX` and its arguments may not run into the next `<|tool_call_begin|>`; the name is
              the id's last dotted part before `:` (`functions.ns.get_weather:0` -> `get_weather`).
  hermes:     <tool_call>{"name": NAME, "arguments": {...}}</tool_call>; an unclosed last call runs to the
              end of the text. One unreadable call turns the whole response into plain text.
  deepseek_v3: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{json}\\n```
              <｜tool▁call▁end｜>...<｜tool▁calls▁end｜>; each call's four lines exactly so.
What the engine silently discards (a call without `:IDX`, one never closed) is listed in `dropped`, not
raised and not a call. What the engine passes on but a client cannot use (arguments that are not a JSON
object, non-finite numbers, nesting past `MAX_NESTING`, lone surrogates) is kept as a call with `error` set.
Every parser is one linear pass (str.find only; no backtracking regex over the text).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator

from harness.toolcall.arguments import has_lone_surrogate, read_json, read_json_object, replace_surrogates


@dataclass(frozen=True)
class ParsedCall:
    name: str | None
    arguments: dict[str, Any] | None
    call_id: str | None = None
    error: str | None = None  # set when the call is malformed


@dataclass(frozen=True)
class ParsedTurn:
    content: str
    calls: list[ParsedCall] = field(default_factory=list)
    error: str | None = None  # set when the turn as a whole is malformed (invalid Unicode in the output)
    dropped: tuple[str, ...] = ()  # tool-call syntax the engine's parser discards, with the reason

    @property
    def malformed(self) -> bool:
        return self.error is not None or any(call.error for call in self.calls)


def _checked_text(parse: Callable[[str], ParsedTurn]) -> Callable[[str], ParsedTurn]:
    """Output with lone surrogates is parsed with them replaced (U+FFFD) and the turn marked malformed."""

    def parse_text(text: str) -> ParsedTurn:
        if not has_lone_surrogate(text):
            return parse(text)
        turn = parse(replace_surrogates(text))
        return ParsedTurn(turn.content, turn.calls, "output holds invalid Unicode (a lone surrogate)", turn.dropped)

    parse_text.__name__ = parse.__name__
    parse_text.__doc__ = parse.__doc__
    return parse_text


def _call(name: str | None, raw_arguments: str, call_id: str | None) -> ParsedCall:
    arguments, error = read_json_object(raw_arguments)
    return ParsedCall(name=name, arguments=arguments, call_id=call_id, error=error)


class _Finder:
    """`text.find(marker, start)` with the answer remembered, so that increasing starts scan the text once."""

    def __init__(self, text: str, marker: str) -> None:
        self.text, self.marker, self.found = text, marker, -2

    def __call__(self, start: int) -> int:
        if self.found != -1 and self.found < start:
            self.found = self.text.find(self.marker, start)
        return self.found


# -- Kimi K2 ---------------------------------------------------------------------------------------------
K2_SECTION_BEGIN = "<|tool_calls_section_begin|>"
K2_SECTION_END = "<|tool_calls_section_end|>"
K2_CALL_BEGIN = "<|tool_call_begin|>"
K2_ARGUMENT_BEGIN = "<|tool_call_argument_begin|>"
K2_CALL_END = "<|tool_call_end|>"


def kimi_call_id(region: str) -> str | None:
    """The id in the text between `<|tool_call_begin|>` and the next `<`: `\\s*(ID)\\s*` with ID = `.+:\\d+`."""
    stripped = region.rstrip()
    colon = stripped.rfind(":")
    index = stripped[colon + 1 :]
    if colon < 0 or not index or not all(c.isdecimal() for c in index):
        return None
    ident = stripped.lstrip()
    if ident.rfind(":") == 0:  # an empty name part may only take the last leading blank
        return stripped[len(stripped) - len(ident) - 1 :] if len(stripped) > len(ident) else None
    return ident


def kimi_name(call_id: str) -> str:
    return call_id.split(":")[0].split(".")[-1]


def _parse_kimi_k2(text: str) -> ParsedTurn:
    section = text.find(K2_SECTION_BEGIN)
    if section < 0:
        return ParsedTurn(content=text.strip())
    calls: list[ParsedCall] = []
    dropped: list[str] = []
    next_lt, next_end, next_begin = _Finder(text, "<"), _Finder(text, K2_CALL_END), _Finder(text, K2_CALL_BEGIN)
    begin = next_begin(0)
    while begin >= 0:
        start = begin + len(K2_CALL_BEGIN)
        bracket = next_lt(start)
        call_id = kimi_call_id(text[start:bracket]) if bracket >= 0 else None
        if call_id is None or not text.startswith(K2_ARGUMENT_BEGIN, bracket):
            dropped.append(f"call {len(calls) + len(dropped)}: id is not NAME:IDX before the arguments")
            begin = next_begin(start)
            continue
        arguments = bracket + len(K2_ARGUMENT_BEGIN)
        end, following = next_end(arguments), next_begin(arguments)
        if end < 0 or 0 <= following < end:
            dropped.append(f"call {len(calls) + len(dropped)} ({call_id}): not closed by {K2_CALL_END}")
            begin = following
            continue
        calls.append(_call(kimi_name(call_id), text[arguments:end].strip(), call_id))
        begin = next_begin(end + len(K2_CALL_END))
    return ParsedTurn(content=text[:section].strip(), calls=calls, dropped=tuple(dropped))


# -- Hermes ----------------------------------------------------------------------------------------------
HERMES_BEGIN, HERMES_END = "<tool_call>", "</tool_call>"


def _hermes_call(payload: str, index: int) -> ParsedCall | str:
    """A call, or the reason vLLM's hermes parser gives up on the whole response."""
    try:
        json.loads(payload)  # what vLLM accepts; strict-JSON limits below are quantgate's own
    except (ValueError, RecursionError):
        return f"call {index}: not JSON"
    value, error = read_json(payload)
    if error is not None:  # NaN, 1e999, nesting, lone surrogates: a call, malformed
        return ParsedCall(name=None, arguments=None, call_id=f"call_{index}", error=error)
    if not isinstance(value, dict) or "name" not in value or "arguments" not in value:
        return f"call {index}: needs `name` and `arguments`"
    if not isinstance(value["name"], str):
        return f"call {index}: `name` is not a string"
    arguments = value["arguments"]
    if not isinstance(arguments, dict):
        return ParsedCall(value["name"], None, f"call_{index}", "arguments are not a JSON object")
    return ParsedCall(value["name"], arguments, f"call_{index}")


def _parse_hermes(text: str) -> ParsedTurn:
    first = text.find(HERMES_BEGIN)
    if first < 0:
        return ParsedTurn(content=text.strip())
    calls: list[ParsedCall] = []
    begin = first
    while begin >= 0:
        start = begin + len(HERMES_BEGIN)
        end = text.find(HERMES_END, start)
        payload = text[start:] if end < 0 else text[start:end]
        call = _hermes_call(payload, len(calls))
        if isinstance(call, str):
            return ParsedTurn(content=text.strip(), dropped=(call + "; the response is plain text",))
        calls.append(call)
        begin = -1 if end < 0 else text.find(HERMES_BEGIN, end + len(HERMES_END))
    return ParsedTurn(content=text[:first].strip(), calls=calls)


# -- DeepSeek-V3 -----------------------------------------------------------------------------------------
DS_CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
DS_CALLS_END = "<｜tool▁calls▁end｜>"
DS_CALL_BEGIN = "<｜tool▁call▁begin｜>"
DS_SEP = "<｜tool▁sep｜>"
DS_CALL_END = "<｜tool▁call▁end｜>"
DS_JSON_OPEN, DS_JSON_CLOSE = "\n```json\n", "\n```" + DS_CALL_END


def _parse_deepseek_v3(text: str) -> ParsedTurn:
    section = text.find(DS_CALLS_BEGIN)
    if section < 0:
        return ParsedTurn(content=text.strip())
    calls: list[ParsedCall] = []
    dropped: list[str] = []
    begin = text.find(DS_CALL_BEGIN)
    while begin >= 0:
        line_end = text.find("\n", begin)
        head = text[begin + len(DS_CALL_BEGIN) : line_end] if line_end >= 0 else ""
        sep = head.rfind(DS_SEP)
        arguments = line_end + len(DS_JSON_OPEN)
        arguments_end = text.find("\n", arguments) if line_end >= 0 else -1
        if (
            sep < 0
            or not text.startswith(DS_JSON_OPEN, line_end)
            or arguments_end < 0
            or not text.startswith(DS_JSON_CLOSE, arguments_end)
        ):
            dropped.append(f"call {len(calls) + len(dropped)}: not TYPE<sep>NAME, ```json, ARGUMENTS, ``` lines")
            begin = -1 if line_end < 0 else text.find(DS_CALL_BEGIN, line_end)  # every begin on the line fails
            continue
        if head[:sep] != "function":
            reason = f"call {len(calls) + len(dropped)}: type {head[:sep][:20]!r} is not 'function'"
            return ParsedTurn(content=text.strip(), dropped=(reason + "; the response is plain text",))
        calls.append(_call(head[sep + len(DS_SEP) :], text[arguments:arguments_end], f"call_{len(calls)}"))
        begin = text.find(DS_CALL_BEGIN, arguments_end + len(DS_JSON_CLOSE))
    return ParsedTurn(content=text[:section].strip(), calls=calls, dropped=tuple(dropped))


parse_kimi_k2 = _checked_text(_parse_kimi_k2)
parse_hermes = _checked_text(_parse_hermes)
parse_deepseek_v3 = _checked_text(_parse_deepseek_v3)

PARSERS: dict[str, Callable[[str], ParsedTurn]] = {
    "kimi_k2": parse_kimi_k2,
    "hermes": parse_hermes,
    "deepseek_v3": parse_deepseek_v3,
}


def _parser_setting(value: str) -> str:
    if value != "auto" and value not in PARSERS:
        raise ValueError(f"unknown parser {value!r}; known: auto, {', '.join(sorted(PARSERS))}")
    return value


# A suite config's `parser`: a registered parser's name, or "auto" (recognised from the chat template).
ParserSetting = Annotated[str, AfterValidator(_parser_setting)]


def parser_for(name: str) -> Callable[[str], ParsedTurn]:
    if name not in PARSERS:
        raise KeyError(f"unknown tool-call parser {name!r}; known: {', '.join(sorted(PARSERS))}")
    return PARSERS[name]


def parse_chat_message(message: dict[str, Any]) -> ParsedTurn:
    """A chat-completions response message, already parsed by the server: its calls as given, ids kept.

    The endpoint's call ids (`call_9f2c`, `functions.f:0`, or none) are kept as they are and never judged;
    arguments (JSON text, or an object) are read as strictly as raw output's.
    """
    content = message.get("content")
    content = content if isinstance(content, str) else ""
    error = "output holds invalid Unicode (a lone surrogate)" if has_lone_surrogate(content) else None
    calls: list[ParsedCall] = []
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raw_calls, error = [], f"tool_calls is {type(raw_calls).__name__}, not a list"
    for call in raw_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            calls.append(ParsedCall(None, None, None, "tool call has no function name"))
            continue
        call_id = call.get("id") if isinstance(call.get("id"), str) else None
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        calls.append(_call(replace_surrogates(function["name"]), text, call_id))
    return ParsedTurn(content=replace_surrogates(content).strip(), calls=calls, error=error)


class EndpointText(str):
    """A chat-completions answer as text (content, then its calls in Kimi K2 syntax, for the record), carrying
    the server's parsed `message` and `finish_reason`: the loop scores those instead of re-parsing the text."""

    message: dict[str, Any]
    finish_reason: str | None

    def __new__(cls, text: str, message: dict[str, Any], finish_reason: str | None) -> EndpointText:
        value = super().__new__(cls, text)
        value.message, value.finish_reason = message, finish_reason
        return value
