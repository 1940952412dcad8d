"""Held-out perplexity and KL against BF16 of a checkpoint, on documents calibration did not see.

lm-eval's rolling windows (`harness.suites.perplexity.rolling_windows`, context 256, BOS prefix) and
the full-vocabulary KL (`harness.kl.kl_per_token`), on transformers in float32. The model is loaded
as tests/quant/conftest.py and the hf backend do: one forward first (compressed-tensors decompresses
non-expert Linear modules on the first forward), then every floating parameter upcast to float32.
For GPTQ's tests and benchmark: the default calibration set uses held-out text rows 0..99, so these
scores use rows 100..199.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness import kl
from harness.suites.perplexity import rolling_windows

REPOSITORY = Path(__file__).resolve().parents[2]
HELDOUT = Path("suites/data/tinyk2/heldout_text.jsonl")
EVAL_ROWS = (100, 200)  # disjoint from the default calibration rows [0:100]
CONTEXT = 256


@dataclass(frozen=True)
class Scores:
    target_logprobs: torch.Tensor  # [N]
    logprobs: torch.Tensor  # [N, V]


def load_float32(model_dir: Path) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        model(torch.tensor([[0]]))  # decompresses compressed-tensors modules
        for parameter in model.parameters():
            parameter.data = parameter.data.float()
    return model


@torch.no_grad()
def score(model_dir: Path, data: Path = HELDOUT, rows: tuple[int, int] = EVAL_ROWS) -> Scores:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_float32(model_dir)
    path = data if data.is_absolute() or data.exists() else REPOSITORY / data
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()][rows[0] : rows[1]]
    bos = tokenizer("")["input_ids"][0]
    targets, logprobs = [], []
    for text in texts:
        for window in rolling_windows(tokenizer(text)["input_ids"], bos, CONTEXT, CONTEXT):
            ids = torch.tensor([window.tokens])  # [1, T]
            out = torch.log_softmax(model(ids).logits[0, -window.scored - 1 : -1].float(), -1)  # [S, V]
            logprobs.append(out)
            targets.append(out.gather(-1, ids[0, -window.scored :, None])[:, 0])
    return Scores(target_logprobs=torch.cat(targets), logprobs=torch.cat(logprobs))


def perplexity(scores: Scores) -> float:
    return math.exp(-float(scores.target_logprobs.double().mean()))


def kl_mean(baseline: Scores, variant: Scores) -> float:
    return float(kl.kl_per_token(baseline.logprobs, variant.logprobs, tail=False).mean())
