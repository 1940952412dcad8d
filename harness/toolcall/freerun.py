"""Free-running a session: the model acts on its own, its calls executed in the session's tool environment.

The user's requests come from the recorded session, in order; everything else is the model's: each round
renders the history under the context policy (harness.toolcall.sessions.fit_prompt), generates greedily,
and either executes the calls in the action (a `ToolEnvironment` on the session's `initial_state`, the
results appended as tool messages answering the calls' ids) or, for a turn without calls, moves on to
the next request. A request whose calls run past `MAX_CALL_TURNS` moves on as well. Sessions advance
together, one `generate` per round.

The baseline's free run is recorded action by action (prompt and action tokens); a variant teacher-forced
along it agrees at every action up to the first where its greedy output differs, which is exactly where
its own free run would leave the baseline's (the histories are identical until then).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from harness.backends.base import Backend
from harness.toolcall.parsers import ParsedTurn
from harness.toolcall.sessions import Renderer, Session, fit_prompt
from harness.tools.environment import ToolEnvironment
from quantgate.core.errors import InputError

MAX_CALL_TURNS = 4  # assistant turns with calls per request before the next request is sent


@dataclass
class _Run:
    session: Session
    environment: ToolEnvironment
    requests: list[dict[str, Any]]
    pieces: list[list[int]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)  # {"prompt", "action", "text", "calls"}
    call_turns: int = 0
    done: bool = False

    def send_next_request(self, renderer: Renderer) -> bool:
        if not self.requests:
            return False
        self.pieces.append(renderer.message(self.requests.pop(0)))
        self.call_turns = 0
        return True


def free_run(
    backend: Backend, sessions: list[Session], parse: Any, *, actions: int, context_tokens: int,
    max_new_tokens: int, stop: list[str],
) -> list[list[dict[str, Any]]]:
    """Up to `actions` greedy actions per session: for each, the prompt and action token ids, the text and
    the calls' names."""
    renderer = Renderer(backend)
    runs = []
    for session in sessions:
        if session.initial_state is None:
            raise InputError(f"session {session.session_id}: free running needs its initial_state")
        run = _Run(session, ToolEnvironment(session.initial_state),
                   [m for m in session.messages if m["role"] == "user"])
        run.send_next_request(renderer)
        runs.append(run)
    heads = [renderer.head(run.session.tools) for run in runs]
    live = list(range(len(runs)))
    while live:
        prompts = []
        for index in live:
            prompt = fit_prompt(heads[index], runs[index].pieces, renderer.generation_prompt,
                                context_tokens - max_new_tokens)
            if prompt is None:
                raise InputError(f"session {runs[index].session.session_id}: context_tokens {context_tokens} "
                                 f"leaves no room for a request and {max_new_tokens} new tokens")
            prompts.append(prompt)
        texts = backend.generate(prompts, max_new_tokens, stop)
        for index, prompt, text in zip(live, prompts, texts, strict=True):
            _advance(runs[index], renderer, parse(text), text, prompt)
        live = [i for i in live if len(runs[i].actions) < actions and not runs[i].done]
    return [run.actions for run in runs]


def _advance(run: _Run, renderer: Renderer, turn: ParsedTurn, text: str, prompt: list[int]) -> None:
    """Record the action (its tokens as the history renders it) and run it: calls, or the next request."""
    piece = renderer.message({"role": "assistant", "content": text})
    action = piece[len(renderer.generation_prompt) :]
    run.actions.append({"prompt": prompt, "action": action, "text": text, "calls": [c.name for c in turn.calls]})
    run.pieces.append(piece)
    if turn.calls and run.call_turns < MAX_CALL_TURNS:
        run.call_turns += 1
        for number, call in enumerate(turn.calls):
            result = (run.environment.call(call.name, call.arguments) if call.name and call.arguments is not None
                      else {"error": call.error or "unreadable call"})
            message = {"role": "tool", "tool_call_id": call.call_id or f"call:{number}",
                       "content": json.dumps(result, separators=(",", ":"))}
            if call.name:  # a result is headed by the function's name under Kimi K2's template
                message["name"] = call.name
            run.pieces.append(renderer.message(message))
        return
    run.done = not run.send_next_request(renderer)
