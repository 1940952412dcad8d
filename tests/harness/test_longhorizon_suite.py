"""The long-horizon suite on the real bundled model: BF16 against itself never disagrees, the w2 canary
does, and the statistics, session import and errors behave as documented."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.suites.loader import load_suite
from harness.suites.longhorizon import LONGHORIZON_SUITE, LonghorizonConfig
from harness.toolcall.horizon_stats import horizon_summary, survival, two_proportion_p, wilson
from harness.toolcall.sessions import read_sessions, step_windows
from quantgate.core.errors import InputError

SMALL = {"sessions": 1, "score_every": 25}  # 8 of the first session's 200 steps


def config(**overrides) -> LonghorizonConfig:
    """The shipped suite (loaded as the runner loads it), on a few steps."""
    shipped = load_suite("longhorizon")
    return LonghorizonConfig.model_validate(shipped.model_dump() | SMALL | overrides)


@pytest.fixture(scope="module")
def baseline(bundled_backend, tmp_path_factory):
    return LONGHORIZON_SUITE.measure(config(), bundled_backend, tmp_path_factory.mktemp("lh-base"))


def compared(backend, baseline, out: Path) -> dict:
    variant = LONGHORIZON_SUITE.measure_against(config(), backend, out, baseline)
    return {m.name: m for m in LONGHORIZON_SUITE.compare(config(), variant, baseline)}


def test_shipped_suite_scores_200_call_sessions_within_the_context_policy(baseline):
    rows = baseline.samples
    assert len(rows) == 8 and [r["step"] for r in rows] == list(range(0, 200, 25))
    assert all(r["session_steps"] == 200 and r["prompt_tokens"] + r["action_tokens"] <= 512 for r in rows)
    assert all(r["history_tokens"] > r["prompt_tokens"] for r in rows[2:])  # the policy cut the history
    assert "512 tokens" in baseline.extra["context_policy"]
    metrics = {m.name: m for m in baseline.metrics}
    assert metrics["steps_scored"].value == 8 and metrics["action_nll_mean"].direction == "lower"


def test_bf16_against_itself_never_disagrees(bundled_backend, baseline, tmp_path):
    metrics = compared(bundled_backend, baseline, tmp_path)
    assert metrics["disagreements"].value == 0 and metrics["disagreement_rate"].value == 0
    assert metrics["completion_300"].value == 1.0 and metrics["action_kl_mean"].value == 0
    assert metrics["action_nll_delta"].value == 0
    assert metrics["disagreement_rate_high"].value == pytest.approx(wilson(0, 8)[1])


def test_the_w2_canary_disagrees(backend, baseline, tmp_path):
    metrics = compared(backend("w2a16-g32"), baseline, tmp_path)
    print("w2 canary:", {name: round(m.value, 4) for name, m in metrics.items()})
    assert metrics["disagreements"].value >= 2
    assert metrics["completion_300"].value < 1e-3 and metrics["action_kl_mean"].value > 0


def test_wilson_survival_and_drift_statistics():
    assert wilson(0, 50)[1] == pytest.approx(1.959964**2 / (50 + 1.959964**2), rel=1e-6)
    low, high = wilson(5, 50)  # Wilson 95 % for 5/50: 0.0435 .. 0.2136 (Newcombe 1998)
    assert (round(low, 4), round(high, 4)) == (0.0435, 0.2136)
    assert survival(0.01, 300) == pytest.approx(math.exp(300 * math.log(0.99)))
    assert two_proportion_p(0, 40, 10, 40) < 0.001 and two_proportion_p(3, 30, 3, 30) == 1.0
    rows = [{"agree": step < 50, "step": step, "session_steps": 100, "prompt_tokens": 400 + step}
            for step in range(100)]
    summary = horizon_summary(rows)
    assert summary["early"]["rate"] == 0 and summary["late"]["rate"] == 1 and summary["late_vs_early_p"] < 1e-6
    assert summary["completion"][100]["value"] == pytest.approx(0.5**100)


def test_recorded_trace_import(bundled_backend, tmp_path):
    """An agent log with an endpoint's call ids and object arguments reads as the bundled template expects."""
    trace = {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
             "messages": [{"role": "user", "content": "Weather in Oslo?"},
                          {"role": "assistant", "content": None, "tool_calls": [
                              {"id": "call_9f2c", "type": "function",
                               "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
                          {"role": "tool", "tool_call_id": "call_9f2c", "content": "{\"temp_c\": 3}"},
                          {"role": "user", "content": "And Bergen?"},
                          {"role": "assistant", "tool_calls": [
                              {"id": "call_77",
                               "function": {"name": "get_weather", "arguments": "{\"city\":\"Bergen\"}"}}]}]}
    path = tmp_path / "trace.jsonl"
    path.write_text(json.dumps(trace) + "\n")
    [session] = read_sessions(path)
    assert session.session_id == "trace-1"
    assert session.messages[1]["tool_calls"][0]["id"] == "functions.get_weather:0"
    assert session.messages[1]["tool_calls"][0]["function"]["arguments"] == '{"city":"Oslo"}'
    assert session.messages[2]["tool_call_id"] == "functions.get_weather:0"
    assert session.messages[2]["name"] == "get_weather"  # the result is headed by its function, as K2 renders it
    assert session.messages[4]["tool_calls"][0]["id"] == "functions.get_weather:0"  # counted per request
    steps = step_windows(bundled_backend, session, 512)
    assert [s.index for s in steps] == [0, 1]
    text = bundled_backend.tokenizer.decode(steps[1].action)
    assert text.startswith("<|tool_calls_section_begin|>") and '{"city":"Bergen"}' in text


def test_the_prompt_starts_as_the_template_starts_the_conversation(tmp_path, bundled_backend):
    """Kimi K2's default system prompt is in every prompt when the session opens without a system message;
    a session's own system message replaces it."""
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "functions.get_weather:0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}
    for first, kimi in (([], True), ([{"role": "system", "content": "Be brief."}], False)):
        path = tmp_path / "opening.jsonl"
        path.write_text(json.dumps({"messages": [*first, {"role": "user", "content": "Weather?"}, call]}) + "\n")
        [step] = step_windows(bundled_backend, read_sessions(path)[0], 512)
        prompt = bundled_backend.tokenizer.decode(step.prompt)
        assert ("You are Kimi, an AI assistant created by Moonshot AI." in prompt) == kimi
        assert ("Be brief." in prompt) != kimi


def test_bad_session_lines_name_the_file_and_line(tmp_path, bundled_backend):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": []}\n{"messages": "nope"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: not a JSON object with a 'messages' list"):
        read_sessions(path)
    path.write_text('{"tools": [], "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", '
                    '"tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]}\n')
    [session] = read_sessions(path)
    with pytest.raises(InputError, match="messages.1: context_tokens 16 leaves no room"):
        step_windows(bundled_backend, session, 16)


def test_free_running_first_divergence_and_validity(bundled_backend, backend, tmp_path):
    """The baseline runs the first session on its own (its calls executed in the session's environment);
    BF16 never leaves that trajectory, the w2 canary leaves it at the first action. The baseline never
    reproduces a recorded call here, so validity needs its own generated action."""
    free = config(score_every=200, free_run_actions=2, max_new_tokens=48, validity_steps=1)
    base = LONGHORIZON_SUITE.measure(free, bundled_backend, tmp_path / "base")
    assert len(base.samples) == 1 and base.samples[0]["valid"] is not None
    assert "valid_call_rate" in {m.name for m in base.metrics}
    assert base.extra["free_run"] == {"actions": {"longhorizon-00-support": 2}, "self_consistent": 1.0}
    for name, first, diverged in (("bf16", None, 0.0), ("w2a16-g32", 0, 1.0)):
        variant = LONGHORIZON_SUITE.measure_against(free, backend(name), tmp_path / name, base)
        assert variant.extra["free_run_first_divergence"] == {"longhorizon-00-support": first}
        metrics = {m.name: m.value for m in LONGHORIZON_SUITE.compare(free, variant, base)}
        assert metrics["free_run_diverged"] == diverged
