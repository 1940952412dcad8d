"""Held-out perplexity and KL against BF16 of a checkpoint, on documents calibration did not see.

The harness's pieces, used directly: `HFBackend.score_windows` (float32, compressed checkpoints
decompressed), lm-eval's rolling windows (`harness.suites.perplexity.rolling_windows`) and the
full-vocabulary KL (`harness.kl.kl_per_token`). For GPTQ's tests and benchmark: the default
calibration set uses held-out text rows 0..99, so these scores use rows 100..199.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from harness import kl
from harness.backends.hf import HFBackend
from harness.suites.perplexity import rolling_windows

HELDOUT = Path("suites/data/tinyk2/heldout_text.jsonl")
EVAL_ROWS = (100, 200)  # disjoint from the default calibration rows [0:100]
CONTEXT = 256


@dataclass(frozen=True)
class Scores:
    target_logprobs: torch.Tensor  # [N]
    logprobs: torch.Tensor  # [N, V]


def score(model_dir: Path, data: Path = HELDOUT, rows: tuple[int, int] = EVAL_ROWS) -> Scores:
    backend = HFBackend(model_dir, dtype="float32", batch_size=16)
    texts = [json.loads(line)["text"] for line in data.read_text().splitlines() if line.strip()][rows[0] : rows[1]]
    bos = backend.tokenize("", add_bos=True)[0]
    windows = [w for text in texts for w in rolling_windows(backend.tokenize(text), bos, CONTEXT, CONTEXT)]
    scored = backend.score_windows(windows, top_k=None)
    del backend
    return Scores(
        target_logprobs=torch.cat([s.target_logprobs for s in scored]),
        logprobs=torch.cat([s.top_logprobs for s in scored]),
    )


def perplexity(scores: Scores) -> float:
    return math.exp(-float(scores.target_logprobs.double().mean()))


def kl_mean(baseline: Scores, variant: Scores) -> float:
    return float(kl.kl_per_token(baseline.logprobs, variant.logprobs, tail=False).mean())
