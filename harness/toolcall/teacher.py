"""Tool calls scored teacher-forced along the baseline's own trajectory: per call step, paired.

Task success is one bit per scenario; a tool call carries tens of tokens the model can get more or less
right. The baseline's episodes (sample 0 of every scenario) are its own trajectory; each of its steps
whose turn made a tool call is a *call step*: the prompt it saw (the rendered history, as it stood then)
and its turn, the reference, as tokens: the turn's text (content and calls, name and arguments) plus the
end-of-turn token when the turn ended before `max_new_tokens`. Both models are scored along the same
call steps in one forward pass per step (the variant sees the baseline's history, never its own):
  nll_mean       mean NLL per token of the reference turn
  kl_mean        mean KL(baseline || variant) per token, over the baseline's top-`top_k` + a tail bucket
                 (null: the full vocabulary, exact)
  agree          the variant's greedy next token equals the baseline's at every token of the turn: the
                 variant's greedy call at that step is the baseline's (exactly so where the baseline's
                 greedy tokens reproduce its turn, `on_record`, reported as `call_on_record_rate`)
Files in the measurement's out_dir: `toolcall_steps.json` (the baseline's call steps: episode, step,
prompt and action token ids), `toolcall_steps.safetensors` (per action token: target_ids, argmax_ids,
target_logprobs, kept_logprobs [N, K], kept_ids for the baseline, step), and for a variant
`call_steps.jsonl`, one row per call step with both sides' values (the per-item data of the
comparison: episode, step, tokens, nll_mean, baseline_nll_mean, kl_mean, agree).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from harness import kl
from harness.backends.base import Backend, Window, WindowScores
from harness.paired import binomial_stderr, paired_continuous_metrics
from harness.suites.perplexity import gather_partial
from harness.toolcall.loop import Episode
from quantgate.core.errors import InputError
from quantgate.core.metrics import Metric

STEPS = "toolcall_steps.json"
ARTIFACT = "toolcall_steps.safetensors"
ROWS = "call_steps.jsonl"


def call_steps(
    episodes: list[Episode], backend: Backend, end_of_turn: str, max_new_tokens: int
) -> list[dict[str, Any]]:
    """The baseline's call steps: {episode, step (1-based), prompt, action} for every turn with a call."""
    end = backend.tokenize(end_of_turn, add_bos=False)
    steps = []
    for episode in episodes:
        called = {call.step for call in episode.calls}
        for index, (prompt, text) in enumerate(zip(episode.prompts, episode.outputs, strict=False), 1):
            if index not in called:
                continue
            action = backend.tokenize(text, add_bos=False)
            if len(end) == 1 and len(action) < max_new_tokens:  # the turn ended on its own
                action = action + end
            steps.append({"episode": episode.episode_id, "step": index, "prompt": prompt, "action": action})
    return steps


def _argmax(score: WindowScores) -> torch.Tensor:
    return score.top_ids.gather(-1, score.top_logprobs.argmax(-1, keepdim=True))[:, 0]


def _score(backend: Backend, steps: list[dict], top_k: int | None) -> list[WindowScores]:
    return backend.score_windows([Window(s["prompt"] + s["action"], len(s["action"])) for s in steps], top_k)


def measure_baseline(backend: Backend, steps: list[dict], top_k: int | None, out_dir: Path) -> dict[str, Any]:
    """Score the baseline along its own call steps; write STEPS and ARTIFACT. Returns details for summary.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STEPS).write_text(json.dumps(steps))
    if not steps:
        return {"call_steps": 0}
    scores = _score(backend, steps, top_k)
    arrays = {
        "target_ids": torch.tensor([t for s in steps for t in s["action"]]),
        "argmax_ids": torch.cat([_argmax(s) for s in scores]),
        "target_logprobs": torch.cat([s.target_logprobs for s in scores]).float(),
        "kept_logprobs": torch.cat([s.top_logprobs for s in scores]).float(),
        "kept_ids": torch.cat([s.top_ids for s in scores]).to(torch.int32),
        "step": torch.tensor([i for i, s in enumerate(steps) for _ in s["action"]], dtype=torch.int32),
    }
    save_file({k: v.contiguous() for k, v in arrays.items()}, out_dir / ARTIFACT)
    on_record = sum(
        bool(torch.equal(arrays["argmax_ids"][arrays["step"] == i], arrays["target_ids"][arrays["step"] == i]))
        for i in range(len(steps))
    )
    kept = "full vocabulary" if top_k is None else f"top-{top_k} of the baseline + tail bucket"
    return {"call_steps": len(steps), "call_on_record": on_record, "call_kept_distribution": kept}


def measure_variant(backend: Backend, baseline_dir: Path, full_vocabulary: bool, out_dir: Path) -> list[dict]:
    """Score the variant along the baseline's call steps; write ROWS (and return them)."""
    steps = json.loads((baseline_dir / STEPS).read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    if not steps:
        (out_dir / ROWS).write_text("")
        return []
    base = load_file(baseline_dir / ARTIFACT)
    partial = getattr(backend, "max_top_k", None)
    scores = _score(backend, steps, partial)
    token_step = base["step"].long()
    kept = []
    for index, score in enumerate(scores):
        at = base["kept_ids"][token_step == index].long()  # [S, K]
        if partial:  # an endpoint: its own top-k, gathered at the baseline's ids
            kept.append(gather_partial(score.top_ids, score.top_logprobs, at))
        else:
            kept.append(score.top_logprobs.gather(-1, at))
    token_kl = kl.kl_per_token(base["kept_logprobs"], torch.cat(kept).float(), tail=not full_vocabulary)  # [N]
    argmax = torch.cat([_argmax(s) for s in scores])
    nll = -torch.cat([s.target_logprobs for s in scores]).double()
    rows = []
    for index, step in enumerate(steps):
        mask = token_step == index
        if not torch.equal(torch.tensor(step["action"]), base["target_ids"][mask]):
            raise InputError(f"{baseline_dir / STEPS}: call step {index} does not match {ARTIFACT}")
        rows.append(
            {
                "episode": step["episode"],
                "step": step["step"],
                "tokens": len(step["action"]),
                "nll_mean": nll[mask].mean().item(),
                "baseline_nll_mean": -base["target_logprobs"][mask].double().mean().item(),
                "kl_mean": token_kl[mask].mean().item(),
                "agree": bool(torch.equal(argmax[mask], base["argmax_ids"][mask])),
            }
        )
    (out_dir / ROWS).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return rows


def call_metrics(rows: list[dict]) -> list[Metric]:
    """Paired NLL change (t-test, interval), mean KL with its interval, exact-call agreement."""
    if not rows:
        return []
    n = len(rows)
    kl_values = [r["kl_mean"] for r in rows]
    agree = sum(r["agree"] for r in rows)
    kl_test = paired_continuous_metrics("call_kl", [0.0] * n, kl_values, "lower", "nats/token")
    return [
        *paired_continuous_metrics(
            "call_nll", [r["baseline_nll_mean"] for r in rows], [r["nll_mean"] for r in rows], "lower", "nats/token"
        ),
        Metric("call_kl_mean", kl_test[0].value, "lower", kl_test[0].stderr, "nats/token, mean over call steps", n),
        Metric("call_kl_mean_high", kl_test[2].value, "lower", None, "nats/token, 95 % interval high", n),
        Metric("call_agreement", agree / n, "higher", binomial_stderr(agree, n), "share of call steps", n),
    ]
