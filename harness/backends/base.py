"""The narrow interface every backend implements; suites use nothing else.

Three capabilities, so that a serving-engine backend (OpenAI-compatible `/v1/completions` with
echo + logprobs, `/v1/chat/completions`) can implement the same interface later:
  - `score_windows`: per-position log-probabilities of token windows (perplexity, KL, routing);
  - `loglikelihood`: log p(continuation | context) for lm-eval style requests;
  - `generate`: greedy (or sampled) continuations of already-rendered prompts, special tokens kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass(frozen=True)
class WindowScores:
    """Scores of one token window. T = scored positions (tokens after the window's context)."""

    target_logprobs: torch.Tensor  # [T] float32: log p(actual next token)
    top_ids: torch.Tensor  # [T, K] int64: ids of the K most likely tokens (K = vocab when full)
    top_logprobs: torch.Tensor  # [T, K] float32: their log-probabilities
    routing: dict[int, torch.Tensor] = field(default_factory=dict)  # MoE layer -> [T, top_k] expert ids


@dataclass(frozen=True)
class Window:
    """`tokens` are fed to the model; the last `scored` of them are scored (each predicted from all before)."""

    tokens: list[int]
    scored: int


class Backend(Protocol):
    name: str

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]: ...

    def score_windows(self, windows: list[Window], top_k: int | None) -> list[WindowScores]:
        """top_k None keeps the full vocabulary."""
        ...

    def loglikelihood(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), whether the continuation is the greedy one)."""
        ...

    def generate(
        self, prompts: list[list[int]], max_new_tokens: int, stop: list[str], temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[str]:
        """Continuations of token-id prompts, decoded with special tokens kept, cut at the first stop string.

        temperature 0 is greedy; above 0 samples, reproducibly for a given `seed` (identical prompts in one
        call get different samples).
        """
        ...

    def render_chat(self, messages: list[dict], tools: list[dict] | None) -> list[int]:
        """The model's chat template with a generation prompt, as token ids."""
        ...

    def describe(self) -> dict:
        """Device, dtype, threads, model path/endpoint: recorded with every result."""
        ...
