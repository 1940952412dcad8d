"""Parse an assistant turn's raw text into content and tool calls.

Two syntaxes, chosen per model (explicit registry, `parser_for`):
  kimi_k2: <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{json}
           <|tool_call_end|>...<|tool_calls_section_end|>
  hermes:  <tool_call>{"name": NAME, "arguments": {...}}</tool_call>
A call whose id, name or JSON cannot be read is kept with `error` set, so that malformed output
is scored and counted, never raised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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
    error: str | None = None  # set when the turn as a whole is malformed (e.g. an unclosed section)

    @property
    def malformed(self) -> bool:
        return self.error is not None or any(call.error for call in self.calls)


def _json_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and ints past the 4300-digit limit
        return None, f"arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return None, "arguments are not a JSON object"
    return value, None


_KIMI_SECTION = re.compile(r"<\|tool_calls_section_begin\|>(.*?)(<\|tool_calls_section_end\|>|$)", re.S)
_KIMI_CALL = re.compile(r"<\|tool_call_begin\|>(.*?)<\|tool_call_argument_begin\|>(.*?)(<\|tool_call_end\|>|$)", re.S)
_KIMI_ID = re.compile(r"^\s*(?:functions\.)?([A-Za-z_][\w\-.]*):(\d+)\s*$")


def parse_kimi_k2(text: str) -> ParsedTurn:
    section = _KIMI_SECTION.search(text)
    if section is None:
        return ParsedTurn(content=text.strip())
    content = text[: section.start()].strip()
    calls: list[ParsedCall] = []
    for raw_id, raw_args, end in _KIMI_CALL.findall(section.group(1)):
        ident = _KIMI_ID.match(raw_id)
        name = ident.group(1) if ident else None
        arguments, error = _json_object(raw_args.strip())
        if ident is None:
            error = f"tool call id {raw_id.strip()[:40]!r} is not functions.NAME:IDX"
        elif not end:
            error = "tool call is not closed"
        calls.append(ParsedCall(name=name, arguments=arguments, call_id=raw_id.strip(), error=error))
    turn_error = None
    if not section.group(2):
        turn_error = "tool-call section is not closed"
    elif not calls:
        turn_error = "tool-call section holds no call"
    return ParsedTurn(content=content, calls=calls, error=turn_error)


_HERMES_CALL = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.S)


def parse_hermes(text: str) -> ParsedTurn:
    matches = list(_HERMES_CALL.finditer(text))
    if not matches:
        return ParsedTurn(content=text.strip())
    calls: list[ParsedCall] = []
    for index, found in enumerate(matches):
        payload, error = _json_object(found.group(1).strip())
        name = payload.get("name") if payload else None
        arguments = payload.get("arguments") if payload else None
        if isinstance(arguments, str):
            arguments, error = _json_object(arguments)
        if payload is not None and (not isinstance(name, str) or not isinstance(arguments, dict)):
            name = name if isinstance(name, str) else None
            arguments, error = None, "tool call needs a string name and object arguments"
        if not found.group(2):
            error = "tool call is not closed"
        calls.append(ParsedCall(name=name, arguments=arguments, call_id=f"call_{index}", error=error))
    return ParsedTurn(content=text[: matches[0].start()].strip(), calls=calls)


PARSERS: dict[str, Callable[[str], ParsedTurn]] = {"kimi_k2": parse_kimi_k2, "hermes": parse_hermes}


def parser_for(name: str) -> Callable[[str], ParsedTurn]:
    if name not in PARSERS:
        raise KeyError(f"unknown tool-call parser {name!r}; known: {', '.join(sorted(PARSERS))}")
    return PARSERS[name]
