"""Backend `openai`: any OpenAI-compatible server (vLLM, SGLang, a vendor endpoint).

Token handling is local (the checkpoint's own tokenizer and chat template, `tokenizer_dir`); the server
receives token ids, never text, so BOS is exactly what the harness tokenized (a text prompt would get
a second BOS from the server).

- `score_windows` / `loglikelihood`: POST /v1/completions, prompt = token ids, `echo` + `logprobs`
  (+ vLLM's `return_tokens_as_token_ids`, so top-k entries come back as ids, not strings). The first
  prompt token has no log-probability; a window's first token is context only, so nothing is lost.
  The server caps top-k (`max_top_k`: vLLM's `--max-logprobs`, 20 unless raised; `quantgate serve`
  raises it to 64); a full-vocabulary request is answered with that top-k, and the perplexity suite
  then computes KL over the baseline's top-k + tail (see harness/suites/perplexity.py).
- `generate`: POST /v1/completions streamed (`stream: true`), reassembled; stop strings and the stop
  tokens' ids, special tokens kept in the text, greedy unless a temperature is given.
- tool calls, `toolcall_mode`:
  raw  - the harness renders the chat template and parses the raw text with its own parser (as
         K2-Vendor-Verifier's raw mode); generation as above.
  chat - POST /v1/chat/completions with `tools`, streamed: the server renders and parses (vLLM
         `--tool-call-parser kimi_k2`); its structured tool calls are written back in the model's
         canonical Kimi K2 syntax for the record (`EndpointText`), while the loop scores the server's own
         calls and `finish_reason` as returned, its call ids (`call_9f2c`) kept as the history's ids.
- `lm_eval_model`: lm-eval's `local-completions` model on this endpoint (token-id requests, BOS as HFLM).
No routing is available through an endpoint: per-layer routing metrics are computed only where both
sides have them.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoTokenizer

from harness.backends.base import Window, WindowScores
from harness.backends.http_client import HttpClient, RetryPolicy
from harness.toolcall.parsers import EndpointText
from quantgate.core.errors import InputError

ToolcallMode = Literal["chat", "raw"]


@dataclass(frozen=True)
class Endpoint:
    """Where a served model is: base URL, served model name, API key's env var, tokenizer.

    The base URL is kept without `/v1`; one pasted from the openai client or lm-eval
    (`http://host:8000/v1`) is accepted and means the same server."""

    base_url: str
    model: str
    tokenizer: Path  # a folder with the served checkpoint's tokenizer and chat template
    api_key_env: str | None = None
    # what it serves, when known (a server the nightly started for a checkpoint): stable across restarts
    # and ports, so that its cached measurements are found again; default: the URL and served name
    served_identity: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", server_root(self.base_url))

    def api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        if self.api_key_env not in os.environ:
            raise InputError(f"endpoint {self.base_url}: environment variable {self.api_key_env} is not set")
        return os.environ[self.api_key_env]

    def identity(self) -> str:
        if self.served_identity is not None:
            return self.served_identity
        return f"endpoint:{self.base_url.rstrip('/')}#{self.model}"


def server_root(base_url: str) -> str:
    """The server's root URL: `http://h:8000/v1/` and `http://h:8000` are the same server."""
    url = base_url.rstrip("/")
    return url.removesuffix("/v1") if url.endswith("/v1") else url


def _token_id(token: str) -> int:
    """vLLM's `return_tokens_as_token_ids` form: 'token_id:123'."""
    if not token.startswith("token_id:"):
        raise ValueError(f"server returned token {token!r}, not 'token_id:N' (needs return_tokens_as_token_ids)")
    return int(token[len("token_id:") :])


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        concurrency: int = 8,
        timeout: float = 300.0,
        retry: RetryPolicy | None = None,
        journal: Path | None = None,
        max_top_k: int = 64,
        toolcall_mode: ToolcallMode = "chat",
    ) -> None:
        self.endpoint, self.max_top_k, self.toolcall_mode = endpoint, max_top_k, toolcall_mode
        self.client = HttpClient(
            endpoint.base_url,
            api_key=endpoint.api_key(),
            concurrency=concurrency,
            timeout=timeout,
            retry=retry,
            journal=journal,
        )
        self.tokenizer = AutoTokenizer.from_pretrained(endpoint.tokenizer)
        self._chats: dict[tuple[int, ...], tuple[list[dict], list[dict] | None]] = {}

    # -- token handling -------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_bos)["input_ids"]

    def render_chat(self, messages: list[dict], tools: list[dict] | None) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            messages, tools=tools or None, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        if self.toolcall_mode == "chat":  # generate() sends the conversation, not these ids
            self._chats[tuple(ids)] = (copy.deepcopy(messages), copy.deepcopy(tools))
        return ids

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "base_url": self.endpoint.base_url,
            "model": self.endpoint.model,
            "tokenizer": str(self.endpoint.tokenizer),
            "device": "endpoint",
            "dtype": "server",
            "threads": None,
            "max_top_k": self.max_top_k,
            "toolcall_mode": self.toolcall_mode,
            "concurrency": self.client.concurrency,
        }

    # -- scoring ----------------------------------------------------------------------------------
    def _echo(self, prompts: list[list[int]], top_k: int) -> list[dict]:
        bodies = [
            {
                "model": self.endpoint.model,
                "prompt": prompt,
                "max_tokens": 1,
                "temperature": 0.0,
                "echo": True,
                "logprobs": top_k,
                "return_tokens_as_token_ids": True,
            }
            for prompt in prompts
        ]
        return [r["choices"][0]["logprobs"] for r in self.client.post_many("/v1/completions", bodies)]

    def score_windows(self, windows: list[Window], top_k: int | None) -> list[WindowScores]:
        """top_k None (full vocabulary) is answered with the server's `max_top_k`."""
        k = self.max_top_k if top_k is None else top_k
        if k > self.max_top_k:
            raise InputError(
                f"top_k {k} exceeds what endpoint {self.endpoint.base_url} returns ({self.max_top_k}; vLLM: "
                "--max-logprobs)"
            )
        out = []
        for window, logprobs in zip(windows, self._echo([w.tokens for w in windows], k), strict=True):
            n = len(window.tokens)
            span = range(n - window.scored, n)  # prompt positions of the scored tokens
            targets, top_ids, top_values = [], [], []
            for position in span:
                target = window.tokens[position]
                entries = sorted(
                    ((_token_id(t), v) for t, v in logprobs["top_logprobs"][position].items()),
                    key=lambda item: (-item[1], item[0]),
                )
                targets.append(logprobs["token_logprobs"][position])
                top_ids.append([i for i, _ in entries[:k]])
                top_values.append([v for _, v in entries[:k]])
                if _token_id(logprobs["tokens"][position]) != target:
                    raise ValueError(f"server echoed token {logprobs['tokens'][position]} for id {target}")
            out.append(
                WindowScores(
                    target_logprobs=torch.tensor(targets, dtype=torch.float32),  # [T]
                    top_ids=torch.tensor(top_ids, dtype=torch.int64),  # [T, k]
                    top_logprobs=torch.tensor(top_values, dtype=torch.float32),  # [T, k]
                )
            )
        return out

    def loglikelihood(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        results = []
        for (context, continuation), logprobs in zip(
            requests, self._echo([c + x for c, x in requests], 1), strict=True
        ):
            span = range(len(context), len(context) + len(continuation))
            score = sum(logprobs["token_logprobs"][p] for p in span)
            greedy = all(
                max(logprobs["top_logprobs"][p].items(), key=lambda item: item[1])[0] == f"token_id:{t}"
                for p, t in zip(span, continuation, strict=True)
            )
            results.append((score, greedy))
        return results

    # -- generation --------------------------------------------------------------------------------
    def _stop_ids(self, stop: list[str]) -> list[int]:
        vocab = self.tokenizer.get_vocab()
        return [vocab[s] for s in stop if s in vocab] or [self.tokenizer.eos_token_id]

    @staticmethod
    def _cut(text: str, stop: list[str]) -> str:
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        return text[:cut] if cut >= 0 else text

    def generate(
        self, prompts: list[list[int]], max_new_tokens: int, stop: list[str], temperature: float = 0.0, seed: int = 0
    ) -> list[str]:
        if self.toolcall_mode == "chat" and prompts and all(tuple(p) in self._chats for p in prompts):
            return self._chat_generate(prompts, max_new_tokens, temperature, seed)
        bodies = [
            {
                "model": self.endpoint.model,
                "prompt": prompt,
                "max_tokens": max_new_tokens,
                "temperature": temperature,
                "seed": seed + index,
                "stop": stop,
                "stop_token_ids": self._stop_ids(stop),
                "skip_special_tokens": False,
                "spaces_between_special_tokens": False,
                "stream": True,
            }
            for index, prompt in enumerate(prompts)
        ]
        responses = self.client.post_many("/v1/completions", bodies)
        return [self._cut(r["choices"][0].get("text", ""), stop) for r in responses]

    def _chat_generate(self, prompts: list[list[int]], max_new_tokens: int, temperature: float, seed: int) -> list[str]:
        bodies = []
        for index, prompt in enumerate(prompts):
            messages, tools = self._chats[tuple(prompt)]
            body = {
                "model": self.endpoint.model,
                "messages": [_api_message(m) for m in messages],
                "max_tokens": max_new_tokens,
                "temperature": temperature,
                "seed": seed + index,
                "stream": True,
                "skip_special_tokens": False,
            }
            if tools:
                body |= {"tools": tools, "tool_choice": "auto"}
            bodies.append(body)
        responses = self.client.post_many("/v1/chat/completions", bodies)
        choices = [r["choices"][0] for r in responses]
        return [EndpointText(kimi_k2_text(c["message"]), c["message"], c.get("finish_reason")) for c in choices]

    # -- lm-eval --------------------------------------------------------------------------------------
    def lm_eval_model(self, batch_size: int, max_length: int = 2048):
        """lm-eval's `local-completions` on this endpoint, requests as token ids. BOS as lm-eval's HFLM does it:
        HFLM encodes with the tokenizer's default (Kimi K2's adds BOS), local-completions adds none unless
        `add_bos_token`; so it is set exactly when the tokenizer adds one, and both score the same tokens."""
        from lm_eval.models.openai_completions import LocalCompletionsAPI

        key = self.endpoint.api_key()
        return LocalCompletionsAPI(
            base_url=self.endpoint.base_url.rstrip("/") + "/v1/completions",
            model=self.endpoint.model,
            tokenizer=str(self.endpoint.tokenizer),
            tokenizer_backend="huggingface",
            tokenized_requests=True,
            add_bos_token=bool(self.tokenize("", add_bos=True)),
            num_concurrent=self.client.concurrency,
            max_retries=self.client.retry.attempts,
            batch_size=1,
            max_length=max_length,
            timeout=int(self.client.timeout),
            header={"Authorization": f"Bearer {key}"} if key else None,
        )


def _api_message(message: dict) -> dict:
    """The harness's message (tool-call arguments as objects or JSON text) in the API's shape (JSON text)."""
    out = {k: v for k, v in message.items() if k != "tool_calls"}
    if message.get("tool_calls"):
        out["tool_calls"] = [
            call | {"function": call["function"] | {"arguments": _json_text(call["function"]["arguments"])}}
            for call in message["tool_calls"]
        ]
    return out


def _json_text(arguments: object) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)


def kimi_k2_text(message: dict) -> str:
    """A chat-completions message in Kimi K2's raw tool-call syntax (content first, then the section); ids are
    written as `functions.NAME:IDX`, the form the syntax has, whatever the server's ids were."""
    content = message.get("content") or ""
    calls = message.get("tool_calls") or []
    if not calls:
        return content
    parts = [
        f"<|tool_call_begin|>functions.{call['function']['name']}:{i}"
        f"<|tool_call_argument_begin|>{call['function']['arguments']}<|tool_call_end|>"
        for i, call in enumerate(calls)
    ]
    return content + "<|tool_calls_section_begin|>" + "".join(parts) + "<|tool_calls_section_end|>"
