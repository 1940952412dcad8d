"""Suite `longhorizon`: hundreds of sequential tool calls in one conversation, teacher-forced.

Sessions (`sessions_file`, harness.toolcall.sessions: generated ones, or recorded agent logs in the same
OpenAI format) are cut into steps, one per assistant message with tool calls. At every step both models
see the same history, the recorded one, cut by the context policy (the start with the tool block and the
template's default system prompt, then the most recent whole messages within `context_tokens`), and are
scored along the recorded action in one forward pass per step:
  - agreement: the variant's greedy next token equals the baseline's at every token of the action. Where
    the baseline's greedy decoding reproduces the recorded action (`on_record`, reported), this is exactly
    "the variant's greedy call (name, arguments, end of turn) is the baseline's"; elsewhere it is the same
    test along the record;
  - validity: a step where the variant agrees with an on-record baseline makes the recorded call; at up to
    `validity_steps` of the other steps (evenly spread) the model's own action is generated greedily and its
    calls checked against the declared tools' schemas (generation is what costs: the nightly keeps it 0);
  - NLL and KL(baseline || variant) over the action's tokens (the baseline's top-`top_k` plus a tail).
The comparison turns per-step disagreement into a rate with its Wilson interval, a survival curve and the
projected probability of completing 100, 200 and 300 steps (harness.toolcall.horizon_stats).

Free-running mode (`free_run_actions`, harness.toolcall.freerun): the baseline runs each session on its
own, its calls executed; the variant, teacher-forced along that run, gives the first action where its own
free run would leave the baseline's (`free_run_diverged`, `free_run_first_divergence_mean`).

`score_every` scores every n-th step of each session (a session keeps its full history: n only thins what
is scored), which is how the nightly stays cheap; `sessions` keeps the first N sessions.
Artifacts: `longhorizon.safetensors`, per scored action token: target_ids, argmax_ids, target_logprobs,
kept_logprobs [N, K] (+ kept_ids for the baseline), step [N] (the row index of its step).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from harness import kl
from harness.backends.base import Backend, Window
from harness.suites.base import Measurement, SuiteConfig, SuiteKind, register_suite
from harness.suites.paths import suite_data_path
from harness.suites.perplexity import gather_partial
from harness.toolcall.freerun import free_run
from harness.toolcall.horizon_stats import horizon_summary
from harness.toolcall.loop import declared_schema_errors, detect_parser
from harness.toolcall.parsers import ParserSetting, parser_for
from harness.toolcall.sessions import Step, read_sessions, step_windows
from quantgate.core.errors import InputError
from quantgate.core.metrics import Metric

ARTIFACT = "longhorizon.safetensors"
FREE_RUN = "free_run.json"  # the baseline's free run: per session, each action's prompt, tokens, text and argmax


class LonghorizonConfig(SuiteConfig):
    kind: Literal["longhorizon"]
    sessions_file: Path  # JSONL sessions (harness.toolcall.sessions)
    sessions: int | None = Field(None, ge=1)  # the first N sessions (null: all)
    score_every: int = Field(1, ge=1)  # score every n-th step of each session
    context_tokens: int = Field(512, ge=64)  # prompt + action per step (the context policy)
    top_k: int = Field(16, ge=1)  # baseline log-probabilities kept per action token
    validity_steps: int = Field(0, ge=0)  # generate the model's own action at up to N steps where it is unknown
    parser: ParserSetting = "auto"  # for those generated actions
    max_new_tokens: int = Field(96, ge=1)
    free_run_actions: int = Field(0, ge=0)  # free-running mode: greedy actions per session (0: off)
    stop: list[str] = ["<|im_end|>", "[EOS]"]


def context_policy(config: LonghorizonConfig) -> str:
    return (f"per step: the template's start (tool block, default system prompt) and system messages, then the "
            f"most recent whole messages with the action within {config.context_tokens} tokens; the same prompt "
            f"for baseline and variant")


def _steps(config: LonghorizonConfig, backend: Backend) -> tuple[list[Step], dict[str, list[dict]], dict[str, int]]:
    """Scored steps, each session's declared tools, and each session's step count."""
    sessions = read_sessions(suite_data_path(config.sessions_file))[: config.sessions]
    steps, tools, counts = [], {}, {}
    for session in sessions:
        every = step_windows(backend, session, config.context_tokens)
        tools[session.session_id], counts[session.session_id] = session.tools, len(every)
        steps += every[:: config.score_every]
    return steps, tools, counts


def _calls_valid(calls: list[tuple[str | None, Any]], tools: list[dict]) -> bool:
    return bool(calls) and all(
        name is not None and isinstance(arguments, dict) and declared_schema_errors(tools, name, arguments) == []
        for name, arguments in calls
    )


def _recorded_valid(step: Step, tools: list[dict]) -> bool:
    try:
        calls = [(c["name"], json.loads(c["arguments"])) for c in step.calls]
    except json.JSONDecodeError:
        return False
    return _calls_valid(calls, tools)


def _generated_valid(config: LonghorizonConfig, backend: Backend, steps: list[Step], tools: dict) -> list[bool]:
    """Greedy actions of the model at these steps, each checked: calls, declared, schema-valid."""
    if not steps:
        return []
    parse = _parser(config, backend)
    texts = backend.generate([s.prompt for s in steps], config.max_new_tokens, config.stop)
    valid = []
    for step, text in zip(steps, texts, strict=True):
        turn = parse(text)
        calls = [(c.name, c.arguments) for c in turn.calls]
        valid.append(not turn.malformed and _calls_valid(calls, tools[step.session_id]))
    return valid


def _argmax(score: Any) -> torch.Tensor:
    """[S] the most likely token at each scored position (top_ids may be the whole vocabulary, unsorted)."""
    return score.top_ids.gather(-1, score.top_logprobs.argmax(-1, keepdim=True))[:, 0]


def _spread(indices: list[int], count: int) -> list[int]:
    """At most `count` of `indices`, evenly spaced along them."""
    if len(indices) <= count:
        return indices
    return [indices[i * len(indices) // count] for i in range(count)]


def _score(config: LonghorizonConfig, backend: Backend, steps: list[Step], top_k: int | None) -> list:
    if not steps:
        raise InputError(f"{config.sessions_file}: no assistant message with tool calls to score")
    return backend.score_windows([s.window() for s in steps], top_k)


def _row(step: Step, counts: dict[str, int]) -> dict[str, Any]:
    return {"session": step.session_id, "step": step.index, "session_steps": counts[step.session_id],
            "prompt_tokens": len(step.prompt), "history_tokens": step.history_tokens,
            "action_tokens": len(step.action), "tools": [c["name"] for c in step.calls]}


def _own_metrics(rows: list[dict], target_logprobs: torch.Tensor) -> list[Metric]:
    nll, nll_stderr = kl.mean_stderr(-target_logprobs)
    valid = [r["valid"] for r in rows if r["valid"] is not None]
    metrics = [Metric("steps_scored", float(len(rows)), "none", n=len(rows)),
               Metric("action_nll_mean", nll, "lower", nll_stderr, "nats/token", target_logprobs.numel())]
    if valid:
        share = sum(valid) / len(valid)
        stderr = (share * (1 - share) / len(valid)) ** 0.5
        metrics.append(Metric("valid_call_rate", share, "higher", stderr, n=len(valid)))
    return metrics


def _parser(config: LonghorizonConfig, backend: Backend) -> Any:
    return parser_for(detect_parser(backend) if config.parser == "auto" else config.parser)


def _free_run_baseline(config: LonghorizonConfig, backend: Backend, out_dir: Path) -> dict[str, Any]:
    """The baseline's own free run, scored along itself; written to FREE_RUN."""
    sessions = read_sessions(suite_data_path(config.sessions_file))[: config.sessions]
    runs = free_run(backend, sessions, _parser(config, backend), actions=config.free_run_actions,
                    context_tokens=config.context_tokens, max_new_tokens=config.max_new_tokens, stop=config.stop)
    steps = [a for run in runs for a in run]
    scores = backend.score_windows([Window(tokens=a["prompt"] + a["action"], scored=len(a["action"])) for a in steps],
                                   1)
    for action, score in zip(steps, scores, strict=True):
        action["argmax"] = _argmax(score).tolist()
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {s.session_id: run for s, run in zip(sessions, runs, strict=True)}
    (out_dir / FREE_RUN).write_text(json.dumps(record))
    consistent = sum(a["argmax"] == a["action"] for a in steps)
    return {"actions": {s: len(run) for s, run in record.items()}, "self_consistent": consistent / len(steps)}


def _free_run_divergence(config: LonghorizonConfig, backend: Backend, baseline: Measurement) -> dict[str, int | None]:
    """Per session: the first action of the baseline's free run where the variant's greedy output differs."""
    record = json.loads((baseline.out_dir / FREE_RUN).read_text())
    steps = [a for run in record.values() for a in run]
    scores = backend.score_windows([Window(tokens=a["prompt"] + a["action"], scored=len(a["action"])) for a in steps],
                                   1)
    differs = iter([_argmax(score).tolist() != a["argmax"] for a, score in zip(steps, scores, strict=True)])
    divergence = {}
    for session, run in record.items():
        flags = [next(differs) for _ in run]
        divergence[session] = flags.index(True) if True in flags else None
    return divergence


def measure(config: LonghorizonConfig, backend: Backend, out_dir: Path) -> Measurement:
    steps, tools, counts = _steps(config, backend)
    scores = _score(config, backend, steps, config.top_k)
    rows = []
    for step, score in zip(steps, scores, strict=True):
        on_record = bool((_argmax(score) == torch.tensor(step.action)).all())
        rows.append(_row(step, counts) | {
            "on_record": on_record, "nll_mean": -score.target_logprobs.double().mean().item(),
            "valid": _recorded_valid(step, tools[step.session_id]) if on_record else None})
    off = [i for i, r in enumerate(rows) if r["valid"] is None]
    off = _spread(off, config.validity_steps)
    for i, valid in zip(off, _generated_valid(config, backend, [steps[i] for i in off], tools), strict=True):
        rows[i]["valid"] = valid
    arrays = {
        "target_ids": torch.tensor([t for s in steps for t in s.action]),
        "argmax_ids": torch.cat([_argmax(s) for s in scores]),
        "target_logprobs": torch.cat([s.target_logprobs for s in scores]).float(),
        "kept_logprobs": torch.cat([s.top_logprobs for s in scores]).float(),
        "kept_ids": torch.cat([s.top_ids for s in scores]).to(torch.int32),
        "step": torch.tensor([i for i, s in enumerate(steps) for _ in s.action], dtype=torch.int32),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in arrays.items()}, out_dir / ARTIFACT)
    on_record = sum(r["on_record"] for r in rows)
    metrics = _own_metrics(rows, arrays["target_logprobs"]) + [
        Metric("on_record_rate", on_record / len(rows), "none", n=len(rows))]
    extra = {"context_policy": context_policy(config), "sessions": counts, "score_every": config.score_every}
    if config.free_run_actions:
        extra["free_run"] = _free_run_baseline(config, backend, out_dir)
    return Measurement(metrics=metrics, samples=rows, out_dir=out_dir, extra=extra)


def measure_against(config: LonghorizonConfig, backend: Backend, out_dir: Path, baseline: Measurement) -> Measurement:
    base = load_file(baseline.out_dir / ARTIFACT)
    steps, tools, counts = _steps(config, backend)
    targets = torch.tensor([t for s in steps for t in s.action])
    if not torch.equal(targets, base["target_ids"]):
        raise InputError(f"{config.sessions_file}: the model renders the sessions differently from the baseline")
    partial = getattr(backend, "max_top_k", None)
    scores = _score(config, backend, steps, partial)
    token_step = base["step"].long()
    base_ids = base["kept_ids"].long()
    kept = []
    for index, score in enumerate(scores):
        at = base_ids[token_step == index]  # [S, K]
        if partial:  # an endpoint: its own top-k, gathered at the baseline's ids
            kept.append(gather_partial(score.top_ids, score.top_logprobs, at))
        else:
            kept.append(score.top_logprobs.gather(-1, at))
    arrays = {
        "target_ids": targets,
        "argmax_ids": torch.cat([_argmax(s) for s in scores]),
        "target_logprobs": torch.cat([s.target_logprobs for s in scores]).float(),
        "kept_logprobs": torch.cat(kept).float(),
        "step": base["step"],
    }
    same = arrays["argmax_ids"] == base["argmax_ids"]  # [N]
    token_kl = kl.kl_per_token(base["kept_logprobs"], arrays["kept_logprobs"], tail=True)
    rows = []
    for index, (step, base_row) in enumerate(zip(steps, baseline.samples, strict=True)):
        mask = token_step == index
        differs = (~same[mask]).nonzero()
        agree = differs.numel() == 0
        valid = base_row["valid"] if agree and base_row["on_record"] else None
        rows.append(_row(step, counts) | {
            "on_record": base_row["on_record"], "agree": agree,
            "first_different_token": None if agree else int(differs[0, 0]),
            "kl_mean": token_kl[mask].mean().item(),
            "nll_mean": -arrays["target_logprobs"][mask].double().mean().item(),
            "valid": valid,
        })
    unknown = [i for i, r in enumerate(rows) if r["valid"] is None]
    unknown = _spread(unknown, config.validity_steps)
    for i, valid in zip(unknown, _generated_valid(config, backend, [steps[i] for i in unknown], tools), strict=True):
        rows[i]["valid"] = valid
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in arrays.items()}, out_dir / ARTIFACT)
    extra = {"context_policy": context_policy(config), "sessions": counts, "score_every": config.score_every,
             "generated_for_validity": len(unknown)}
    if config.free_run_actions:
        extra["free_run_actions"] = baseline.extra["free_run"]["actions"]
        extra["free_run_first_divergence"] = _free_run_divergence(config, backend, baseline)
    metrics = _own_metrics(rows, arrays["target_logprobs"])
    return Measurement(metrics=metrics, samples=rows, out_dir=out_dir, extra=extra)


def compare(config: LonghorizonConfig, variant: Measurement, baseline: Measurement) -> list[Metric]:
    rows = variant.samples
    if not rows or "agree" not in rows[0]:
        raise ValueError("longhorizon: the variant must be measured against the baseline (measure_against)")
    summary = horizon_summary(rows)
    n = summary["steps"]
    rate = summary["rate"]
    kl_values = torch.tensor([r["kl_mean"] for r in rows], dtype=torch.float64)
    kl_mean, kl_stderr = kl.mean_stderr(kl_values)
    delta_nll = torch.tensor([r["nll_mean"] - b["nll_mean"] for r, b in zip(rows, baseline.samples, strict=True)])
    delta, delta_stderr = kl.mean_stderr(delta_nll)
    metrics = [
        Metric("disagreement_rate", rate, "lower", (rate * (1 - rate) / n) ** 0.5, "per step", n),
        Metric("disagreement_rate_low", summary["rate_low"], "lower", None, "per step, Wilson 95 % lower", n),
        Metric("disagreement_rate_high", summary["rate_high"], "lower", None, "per step, Wilson 95 % upper", n),
        Metric("disagreements", float(summary["disagreements"]), "lower", None, "steps", n),
        *[Metric(f"completion_{k}", v["value"], "higher", None, f"P(no disagreement in {k} steps)", n)
          for k, v in summary["completion"].items()],
        *[Metric(f"completion_{k}_low", v["low"], "higher", None, "Wilson 95 % lower end", n)
          for k, v in summary["completion"].items()],
        Metric("disagreement_early", summary["early"]["rate"], "lower", None, "first half of each session",
               summary["early"]["steps"]),
        Metric("disagreement_late", summary["late"]["rate"], "lower", None, "second half of each session",
               summary["late"]["steps"]),
        Metric("late_vs_early_p", summary["late_vs_early_p"], "none", None, "two-proportion z-test", n),
        Metric("disagreement_long_prompts", summary["long_prompts"]["rate"], "lower", None,
               f"prompts >= {summary['prompt_median_tokens']} tokens", summary["long_prompts"]["steps"]),
        Metric("disagreement_short_prompts", summary["short_prompts"]["rate"], "lower", None,
               f"prompts < {summary['prompt_median_tokens']} tokens", summary["short_prompts"]["steps"]),
        Metric("action_kl_mean", kl_mean, "lower", kl_stderr, "nats/token, mean over steps", n),
        Metric("action_nll_delta", delta, "lower", delta_stderr, "nats/token, variant - baseline", n),
    ]
    valid = [r["valid"] for r in rows if r["valid"] is not None]
    base_valid = [r["valid"] for r in baseline.samples if r.get("valid") is not None]
    if valid and base_valid:
        metrics.append(Metric("valid_call_rate_difference", sum(valid) / len(valid) - sum(base_valid) / len(base_valid),
                              "higher", None, "variant - baseline", len(valid)))
    return metrics + _free_run_metrics(variant)


def _free_run_metrics(variant: Measurement) -> list[Metric]:
    """How far the variant's own free run follows the baseline's: share of sessions that leave it, and the
    mean first action where they do (a session that never leaves counts as its number of actions)."""
    divergence = variant.extra.get("free_run_first_divergence")
    if not divergence:
        return []
    actions = variant.extra["free_run_actions"]
    n = len(divergence)
    left = sum(step is not None for step in divergence.values())
    reached = [actions[s] if step is None else step for s, step in divergence.items()]
    return [Metric("free_run_diverged", left / n, "lower", None, "share of sessions", n),
            Metric("free_run_first_divergence_mean", sum(reached) / n, "higher", None,
                   f"actions (censored at {max(actions.values())})", n)]


LONGHORIZON_SUITE = register_suite(SuiteKind("longhorizon", LonghorizonConfig, measure, compare, measure_against))
