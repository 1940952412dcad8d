"""Long-horizon sessions: OpenAI-format conversations with tool calls, read from JSONL, cut into steps.

A line is {"id"?, "tools": [OpenAI tool schema], "messages": [...]} (a generated session, or a recorded
agent log: the same shape). A step is one assistant message that makes tool calls; its action is the
message's tokens as the chat template renders them (calls and the closing end-of-turn token).

Context policy (`step_windows`): a step's prompt is the start of the rendering (what the template writes
before the first message: the tool block, and under Kimi K2's template its default system prompt when the
session does not open with a system message; then every system message) followed by the most recent whole
messages that fit, so that prompt + action <= `context_tokens`; the same prompt for every model. Messages
are rendered one at a time and joined, which needs a template that renders each message on its own (Kimi
K2's and ChatML-style templates do); a template that does not is refused with an error naming the session.

Imported call ids that are not Kimi K2's `functions.NAME:IDX` (an endpoint's `call_9f2c`) are rewritten
to it (IDX counting the calls since the last user message), in the call and in the tool message that
answers it, so the bundled template renders them as the
model was trained; arguments given as objects are written as compact JSON strings, and a tool message
without `name` gets its call's function name (Kimi K2's template heads the result with it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends.base import Backend, Window
from quantgate.core.errors import InputError

KIMI_CALL_ID = re.compile(r"^functions\.[^:]+:\d+$")
_PROBE = {"role": "user", "content": "x"}


@dataclass(frozen=True)
class Session:
    session_id: str
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    initial_state: dict[str, Any] | None = None  # the tool environment's state at the start, when recorded


@dataclass(frozen=True)
class Step:
    session_id: str
    index: int  # the step's position in its session (0-based, counting every tool-call message)
    calls: list[dict[str, Any]]  # [{"name", "arguments" (a JSON string)}] as recorded
    prompt: list[int]  # token ids after the context policy, generation prompt included
    action: list[int]  # the recorded assistant message's tokens after the generation prompt
    history_tokens: int  # tokens of the whole history before the step (before the context policy)

    def window(self) -> Window:
        return Window(tokens=self.prompt + self.action, scored=len(self.action))


def _normalised(messages: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Kimi K2 call ids and string arguments; tool messages follow their calls' new ids."""
    renamed: dict[str, str] = {}
    names: dict[str, str] = {}  # new call id -> function name
    count = 0
    out = []
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InputError(f"{where}: messages.{position}: not a chat message with a role")
        message = dict(message)
        if message["role"] == "user":
            count = 0  # ids count the calls of one request, as Kimi K2's training chats do
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise InputError(f"{where}: messages.{position}.tool_calls: a call without function.name")
                arguments = function.get("arguments", "{}")
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
                call_id = str(call.get("id") or "")
                new_id = call_id if KIMI_CALL_ID.match(call_id) else f"functions.{function['name']}:{count}"
                renamed[call_id] = new_id
                names[new_id] = function["name"]
                count += 1
                calls.append({"id": new_id, "type": "function",
                              "function": {"name": function["name"], "arguments": arguments}})
            message["tool_calls"] = calls
            message["content"] = message.get("content") or ""
        elif message["role"] == "tool" and message.get("tool_call_id") in renamed:
            message["tool_call_id"] = renamed[message["tool_call_id"]]
            if not message.get("name"):  # Kimi K2 heads a result with its function's name, as the model was trained
                message["name"] = names[message["tool_call_id"]]
        out.append(message)
    return out


def read_sessions(path: Path) -> list[Session]:
    """Every session of a JSONL file; a line that is not a session is an error naming file and line."""
    sessions = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not JSON ({error.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
            raise InputError(f"{where}: not a JSON object with a 'messages' list")
        tools = row.get("tools") or []
        if not isinstance(tools, list):
            raise InputError(f"{where}: tools: not a list of OpenAI tool schemas")
        session_id = str(row.get("id", f"{path.stem}-{number}"))
        state = row.get("initial_state")
        sessions.append(Session(session_id, tools, _normalised(row["messages"], where), state))
    if not sessions:
        raise InputError(f"{path}: no sessions")
    return sessions


class Renderer:
    """A backend's chat template, one message at a time (see the module docstring)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        one, two = backend.render_chat([_PROBE], None), backend.render_chat([_PROBE, _PROBE], None)
        common = next((i for i, (a, b) in enumerate(zip(one, two, strict=False)) if a != b), len(one))
        self.generation_prompt = one[common:]
        self._offset = len(one) - len(self.generation_prompt)  # start + probe

    def message(self, message: dict[str, Any]) -> list[int]:
        """The message's tokens where it is not the first (no start of the conversation before it)."""
        rendered = self.backend.render_chat([_PROBE, message], None)
        return rendered[self._offset : len(rendered) - len(self.generation_prompt)]

    def head(self, tools: list[dict[str, Any]], first: dict[str, Any] = _PROBE) -> list[int]:
        """What the template writes before `first` when it opens the conversation: the tool block, Kimi K2's
        default system prompt when `first` is not a system message, a BOS for a template that writes one."""
        rendered = self.backend.render_chat([first], tools)
        return rendered[: len(rendered) - len(self.generation_prompt) - len(self.message(first))]


def fit_prompt(head: list[int], pieces: list[list[int]], prompt_end: list[int], budget: int) -> list[int] | None:
    """The context policy: `head`, then the most recent whole `pieces` within `budget` tokens, then the
    generation prompt; None when not even the last piece fits."""
    room = budget - len(head) - len(prompt_end)
    kept: list[list[int]] = []
    for piece in reversed(pieces):
        if len(piece) > room:
            break
        room -= len(piece)
        kept.insert(0, piece)
    if room < 0 or not kept:
        return None
    return head + [t for piece in kept for t in piece] + prompt_end


def step_windows(backend: Backend, session: Session, context_tokens: int) -> list[Step]:
    """The session's steps with their prompts under the context policy."""
    renderer = Renderer(backend)
    head = renderer.head(session.tools, *session.messages[:1])
    pieces = [renderer.message(m) for m in session.messages]
    probe = session.messages[: min(6, len(session.messages))]
    if backend.render_chat(probe, session.tools) != head + sum(pieces[: len(probe)], []) + renderer.generation_prompt:
        raise InputError(f"session {session.session_id}: the chat template does not render messages one at a time")
    head += [t for m, p in zip(session.messages, pieces, strict=True) if m["role"] == "system" for t in p]
    steps: list[Step] = []
    history: list[int] = []  # indices of non-system messages so far
    for position, message in enumerate(session.messages):
        if message["role"] == "assistant" and message.get("tool_calls"):
            piece, prompt_end = pieces[position], renderer.generation_prompt
            if piece[: len(prompt_end)] != prompt_end:
                raise InputError(f"session {session.session_id}: messages.{position}: no generation prompt before it")
            action = piece[len(prompt_end) :]
            prompt = fit_prompt(head, [pieces[i] for i in history], prompt_end, context_tokens - len(action))
            if prompt is None:
                raise InputError(
                    f"session {session.session_id}: messages.{position}: context_tokens {context_tokens} leaves "
                    f"no room for the message before the call (tool block {len(head)} tokens, call {len(action)})"
                )
            calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                     for c in message["tool_calls"]]
            steps.append(Step(session.session_id, len(steps), calls, prompt, action,
                              len(head) + sum(len(pieces[i]) for i in history)))
        if message["role"] != "system":
            history.append(position)
    return steps
