"""Multi-step tool-calling episodes, stepped together: one batched `generate` per step across episodes.

An episode is one conversation. Each step renders it with its tools through the model's chat template,
generates one assistant turn, parses it (per-model parser), validates every call against the declared
tool's JSON schema, executes the valid ones against the episode's environment and feeds the results
back as tool messages; until a final answer, `max_steps`, or the context limit.

Model output is data: it is parsed and validated, and only declared tools with schema-valid arguments
reach the environment, through its handler table. Nothing is ever executed as code, and no model output
raises: malformed turns, unknown tools and invalid arguments are recorded and scored.

A malformed turn (a call whose arguments a client cannot use, invalid Unicode) ends the episode. Tool-call
syntax the engine's parser discards (an unclosed call, a bad id) is counted per turn in `dropped_steps`;
the turn goes on with the calls that were kept, as it would through the engine.
In chat mode (`EndpointText`) the server's own parsed calls are scored, its call ids kept in the history.
An episode without an environment (a single-step request) ends after its first turn: its calls are
validated, not executed. The first turn is also recorded as K2-Vendor-Verifier records it (`k2vv`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from harness.backends.base import Backend
from harness.toolcall.arguments import replace_surrogates
from harness.toolcall.k2vv_rules import k2vv_response
from harness.toolcall.parsers import PARSERS, EndpointText, ParsedTurn, parse_chat_message
from harness.tools.environment import ToolEnvironment
from harness.tools.schemas import TOOL_SCHEMAS

Outcome = Literal["answer", "tool_calls", "malformed", "max_steps", "context_exceeded"]
CallStatus = Literal["ok", "malformed", "undeclared_tool", "invalid_arguments"]
# (rendered prompts, max_new_tokens or None, temperature or None: the suite's) -> raw assistant turns
Generate = Callable[[list[list[int]], int | None, float | None], list[str]]
Render = Callable[[list[dict], list[dict] | None], list[int]]  # (messages, tools) -> prompt ids

# The text that opens a tool call in each parser's syntax, used to recognise a chat template's syntax.
PARSER_MARKERS: dict[str, str] = {
    "kimi_k2": "<|tool_calls_section_begin|>",
    "hermes": "<tool_call>",
    "deepseek_v3": "<｜tool▁calls▁begin｜>",
}
assert PARSER_MARKERS.keys() == PARSERS.keys(), "every parser needs a marker"


@dataclass(frozen=True)
class CallRecord:
    step: int  # 1-based assistant turn
    name: str | None
    arguments: dict[str, Any] | None
    status: CallStatus
    errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "name": self.name,
            "arguments": self.arguments,
            "status": self.status,
            "errors": list(self.errors),
        }


@dataclass
class Episode:
    episode_id: str
    sample: int  # index of this sample of the same prompt (pass^k)
    tools: list[dict[str, Any]]  # OpenAI tool schemas declared to the model
    messages: list[dict[str, Any]]  # grows as the episode runs
    max_steps: int
    environment: ToolEnvironment | None  # None: a single-step request, calls validated but not executed
    reference_tools: frozenset[str] | None = None  # tools a reference solution uses; None when unknown
    outputs: list[str] = field(default_factory=list)  # raw assistant turns, one per step
    prompts: list[list[int]] = field(default_factory=list)  # the rendered prompt of each step (not in to_json)
    calls: list[CallRecord] = field(default_factory=list)
    malformed_steps: int = 0
    dropped_steps: int = 0  # turns where the parser discarded tool-call syntax (as the engine would)
    k2vv: dict[str, Any] | None = None  # the first turn as K2-Vendor-Verifier records it (k2vv_rules)
    data_index: int | None = None  # a K2VV request's line number
    max_new_tokens: int | None = None  # this episode's own generation settings (a K2VV request's), else the suite's
    temperature: float | None = None
    stream: bool = True  # K2VV searches raw output for calls only in streamed responses
    first_step_trigger: bool | None = None  # did the first turn try to call a tool
    outcome: Outcome | None = None  # None while running
    final_answer: str | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def steps(self) -> int:
        return len(self.outputs)

    def finish(self, outcome: Outcome, answer: str | None = None) -> None:
        self.outcome, self.final_answer = outcome, answer

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.episode_id,
            "sample": self.sample,
            "data_index": self.data_index,
            "outcome": self.outcome,
            "steps": self.steps,
            "first_step_trigger": self.first_step_trigger,
            "malformed_steps": self.malformed_steps,
            "dropped_steps": self.dropped_steps,
            "k2vv": self.k2vv,
            "final_answer": self.final_answer,
            "calls": [c.to_json() for c in self.calls],
            "outputs": self.outputs,
        }


@functools.lru_cache(maxsize=1024)
def _validator(parameters_json: str) -> Validator | str:
    """The validator for the schema's own `$schema` (Draft 2020-12 when absent), or why the schema is invalid."""
    schema = json.loads(parameters_json)
    if isinstance(schema, dict) and not isinstance(schema.get("$schema", ""), str):
        return "the tool's parameters are not a valid JSON schema: `$schema` is not a string"
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        return f"the tool's parameters are not a valid JSON schema: {exc.message}"
    return cls(schema)


def declared_schema_errors(
    tools: Sequence[dict[str, Any]], name: str, arguments: dict[str, Any]
) -> list[str] | None:
    """Schema violations of `arguments` against the declared tool `name`; None when `name` is not declared."""
    for tool in tools:
        function = tool.get("function", {})
        if function.get("name") == name:
            parameters = function.get("parameters") or {"type": "object"}
            validator = _validator(json.dumps(parameters, sort_keys=True))
            return [validator] if isinstance(validator, str) else [e.message for e in validator.iter_errors(arguments)]
    return None


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _check_call(episode: Episode, step_index: int, call: Any) -> CallRecord:
    if call.error or call.name is None or call.arguments is None:
        return CallRecord(
            step_index, call.name, call.arguments, "malformed", (call.error or "unreadable call",)
        )
    errors = declared_schema_errors(episode.tools, call.name, call.arguments)
    if errors is None:
        declared = ", ".join(t["function"]["name"] for t in episode.tools) or "none"
        return CallRecord(
            step_index,
            call.name,
            call.arguments,
            "undeclared_tool",
            (f"tool {call.name!r} is not declared; declared: {declared}",),
        )
    status: CallStatus = "invalid_arguments" if errors else "ok"
    return CallRecord(step_index, call.name, call.arguments, status, tuple(errors))


def step(episode: Episode, text: str, parse: Callable[[str], ParsedTurn]) -> None:
    """Advance `episode` by one assistant turn `text` (raw model output). Never raises on `text`."""
    episode.outputs.append(replace_surrogates(text))  # written as valid UTF-8 JSON
    step_index = episode.steps
    endpoint = isinstance(text, EndpointText)
    turn = parse_chat_message(text.message) if endpoint else parse(text)
    if step_index == 1:
        episode.first_step_trigger = bool(turn.calls)
        episode.k2vv = k2vv_response(text, episode.tools, stream=episode.stream)
    episode.dropped_steps += bool(turn.dropped)
    records = [_check_call(episode, step_index, call) for call in turn.calls]
    episode.calls.extend(records)
    if turn.malformed:
        episode.malformed_steps += 1
        episode.messages.append({"role": "assistant", "content": replace_surrogates(text)})
        episode.finish("malformed")
        return
    if not turn.calls:
        episode.messages.append({"role": "assistant", "content": turn.content})
        episode.finish("answer", turn.content)
        return
    if episode.environment is None:
        episode.finish("tool_calls")
        return
    first_index = sum(len(m.get("tool_calls", [])) for m in episode.messages if m["role"] == "assistant")
    tool_calls, results = [], []
    for offset, (record, call) in enumerate(zip(records, turn.calls, strict=True)):
        call_id = call.call_id if endpoint and call.call_id else f"functions.{record.name}:{first_index + offset}"
        tool_calls.append(
            {
                "id": call_id,
                "type": "function",
                # a JSON string, as OpenAI messages carry it; compact, as the bundled model writes calls
                "function": {"name": record.name,
                             "arguments": json.dumps(record.arguments, separators=(",", ":"), ensure_ascii=False)},
            }
        )
        if record.status == "ok":
            result = episode.environment.call(record.name, record.arguments)
        else:
            result = {"error": "; ".join(record.errors)}
        message = {"role": "tool", "tool_call_id": call_id, "content": _compact(result)}
        if record.name:  # Kimi K2's template heads a result with the message's name (its tool-call guidance sends it)
            message["name"] = record.name
        results.append(message)
    episode.messages.append({"role": "assistant", "content": turn.content, "tool_calls": tool_calls})
    episode.messages.extend(results)
    if episode.steps >= episode.max_steps:
        episode.finish("max_steps")


def run_episodes(
    episodes: Sequence[Episode],
    render: Render,
    generate: Generate,
    parse: Callable[[str], ParsedTurn],
    *,
    max_new_tokens: int,
    max_context_tokens: int,
) -> int:
    """Step all unfinished episodes together until every one is done; returns the number of generate calls."""
    rounds = 0
    while active := [e for e in episodes if not e.done]:
        groups: dict[tuple[int | None, float | None], list[tuple[Episode, list[int]]]] = {}
        for episode in active:
            prompt = render(episode.messages, episode.tools or None)
            if len(prompt) + (episode.max_new_tokens or max_new_tokens) > max_context_tokens:
                episode.finish("context_exceeded")
                continue
            episode.prompts.append(prompt)
            groups.setdefault((episode.max_new_tokens, episode.temperature), []).append((episode, prompt))
        if not groups:
            break
        for (new_tokens, temperature), stepping in sorted(groups.items(), key=lambda item: repr(item[0])):
            order = sorted(range(len(stepping)), key=lambda i: len(stepping[i][1]))  # similar lengths share a batch
            texts = generate([stepping[i][1] for i in order], new_tokens, temperature)
            rounds += 1
            for i, text in zip(order, texts, strict=True):
                step(stepping[i][0], text, parse)
    return rounds


def _contains(sequence: list[int], part: list[int]) -> bool:
    return any(sequence[i : i + len(part)] == part for i in range(len(sequence) - len(part) + 1))


def detect_parser(backend: Backend) -> str:
    """The tool-call syntax the backend's chat template renders, recognised by its opening marker."""
    probe = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "functions.get_weather:0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                }
            ],
        },
    ]
    rendered = backend.render_chat(probe, [TOOL_SCHEMAS["get_weather"]])
    found = [
        name
        for name, marker in PARSER_MARKERS.items()
        if _contains(rendered, backend.tokenize(marker, add_bos=False))
    ]
    if len(found) != 1:
        raise ValueError(
            f"cannot tell the tool-call syntax from the chat template (markers found: {found or 'none'}); "
            f"set the suite's parser to one of: {', '.join(sorted(PARSERS))}"
        )
    return found[0]
