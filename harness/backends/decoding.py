"""Batched decoding for the `hf` backend: a greedy (or seeded sampling) loop over one KV cache.

Why not `model.generate`: on a tool-calling step the prompts are a few hundred tokens and the turns
a few dozen, so the decode steps dominate, and three things made them slow:
  - a finished row kept being computed until the longest row of its batch stopped; here finished
    rows leave the batch (their cache rows are dropped);
  - transformers' DeepSeek-V3 attention caches MLA's compressed latents and expands the whole cache
    through `kv_b_proj` again at every step (O(cached tokens) matmuls per token); here each layer's
    expansion is memoised and only the new positions are expanded (`_ExpandMemo`);
  - `generate`'s per-step machinery (logits processors, stopping criteria) costs more than a tiny
    model's forward.
The arithmetic per row is otherwise generate's: left padding, the attention mask, position ids as
cumsum(mask) - 1, argmax of the last position's logits. `tests/harness/test_decoding.py` checks
the tokens equal `model.generate`'s greedy tokens.

Sampling (temperature > 0) draws each row's tokens from its own `torch.Generator`, seeded from
(seed, the prompt's token ids, how many identical prompts came before it in the call), so a row's
sample does not depend on which other prompts share its batch or in which order they come.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import DynamicCache


class _ExpandMemo:
    """Memoised `expand_kv` of one MLA attention layer: [B, 1, S, R] latents -> keys/values [B, H, S, D].

    The cache only ever appends positions, so the expansion of positions already seen is kept and only
    the new ones go through `kv_b_proj`. `select` follows the cache when rows leave the batch.
    """

    def __init__(self, expand) -> None:
        self.expand = expand
        self.keys: torch.Tensor | None = None  # [B, H, S0, qk_head_dim]
        self.values: torch.Tensor | None = None  # [B, H, S0, v_head_dim]

    def __call__(self, kv_nope: torch.Tensor, k_rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen = 0 if self.keys is None else self.keys.shape[2]
        if self.keys is None or self.keys.shape[0] != kv_nope.shape[0] or seen >= kv_nope.shape[2]:
            self.keys, self.values = self.expand(kv_nope, k_rot)
            return self.keys, self.values
        keys, values = self.expand(kv_nope[:, :, seen:], k_rot[:, :, seen:])
        self.keys = torch.cat([self.keys, keys], dim=2)
        self.values = torch.cat([self.values, values], dim=2)
        return self.keys, self.values

    def select(self, rows: torch.Tensor) -> None:
        if self.keys is not None:
            self.keys, self.values = self.keys[rows], self.values[rows]


@contextmanager
def _memoised_mla(model: torch.nn.Module) -> Iterator[list[_ExpandMemo]]:
    """Install an `_ExpandMemo` on every attention module that has `expand_kv` (MLA), for one batch."""
    patched = [m for m in model.modules() if callable(getattr(type(m), "expand_kv", None))]
    memos = [_ExpandMemo(m.expand_kv) for m in patched]
    for module, memo in zip(patched, memos, strict=True):
        module.expand_kv = memo
    try:
        yield memos
    finally:
        for module in patched:
            del module.expand_kv


def row_seed(seed: int, prompt: list[int], occurrence: int) -> int:
    """A 63-bit seed for one row: the same prompt, seed and occurrence give the same sample."""
    digest = hashlib.sha256(f"{seed}:{occurrence}:{','.join(map(str, prompt))}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def occurrences(prompts: list[list[int]]) -> list[int]:
    """For each prompt, how many identical prompts come before it in the list."""
    seen: dict[tuple[int, ...], int] = {}
    out = []
    for prompt in prompts:
        key = tuple(prompt)
        out.append(seen.get(key, 0))
        seen[key] = out[-1] + 1
    return out


@torch.no_grad()
def decode_batch(
    model: torch.nn.Module,
    prompts: list[list[int]],
    max_new_tokens: int,
    stop_ids: set[int],
    pad_id: int,
    temperature: float = 0.0,
    generators: list[torch.Generator] | None = None,
) -> list[list[int]]:
    """New token ids per prompt, each ending at (and including) its first stop id or at max_new_tokens."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # [B, T], left padded
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # [B, T]
    outputs: list[list[int]] = [[] for _ in prompts]
    live = list(range(len(prompts)))  # original row of each batch row
    cache = DynamicCache(config=model.config)
    with _memoised_mla(model) as memos:
        logits = model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]  # [B, V]
        for _ in range(max_new_tokens):
            tokens = _next_tokens(logits, temperature, generators, live)  # [B]
            keep = []
            for batch_row, token in enumerate(tokens.tolist()):
                outputs[live[batch_row]].append(token)
                if token not in stop_ids:
                    keep.append(batch_row)
            if not keep or len(outputs[live[0]]) == max_new_tokens:
                break
            if len(keep) < len(live):
                rows = torch.tensor(keep, device=device)
                cache.batch_select_indices(rows)
                for memo in memos:
                    memo.select(rows)
                mask, positions, tokens = mask[rows], positions[rows], tokens[rows]
                live = [live[r] for r in keep]
            positions = positions[:, -1:] + 1  # [B', 1]
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=-1)  # [B', T + steps]
            logits = model(
                input_ids=tokens[:, None], attention_mask=mask, position_ids=positions, cache=cache,
                use_cache=True,
            ).logits[:, -1]
    return outputs


def _next_tokens(
    logits: torch.Tensor, temperature: float, generators: list[torch.Generator] | None, live: list[int]
) -> torch.Tensor:
    """[B, V] logits -> [B] token ids: argmax, or one draw per row from its own generator."""
    if temperature == 0:
        return logits.argmax(-1)
    assert generators is not None, "sampling needs one generator per prompt"
    probs = torch.softmax(logits.float() / temperature, dim=-1).cpu()  # [B, V]
    draws = [torch.multinomial(probs[row], 1, generator=generators[live[row]]) for row in range(len(live))]
    return torch.cat(draws).to(logits.device)
