"""The episode loop: reference trajectories succeed, and no model output can crash a step.

`ScriptedBackend` replays each scenario's reference calls as if a model had produced them; it exists
only to test the loop's logic. Everything else runs the real bundled model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from harness.backends.openai import kimi_k2_text
from harness.suites.base import Measurement
from harness.suites.paths import suite_data_path
from harness.suites.toolcall import TOOLCALL_SUITE, ToolcallSuiteConfig, _scenario_episode
from harness.toolcall.loop import Episode, declared_schema_errors, step
from harness.toolcall.metrics import trigger_scores
from harness.toolcall.parsers import EndpointText, parse_kimi_k2
from harness.tools.environment import ToolEnvironment

SCENARIOS_FILE = "suites/data/tinyk2/toolcall_scenarios.jsonl"
SCENARIOS = [json.loads(line) for line in suite_data_path(SCENARIOS_FILE).read_text().splitlines()]
OUTCOMES = {None, "answer", "tool_calls", "malformed", "max_steps", "context_exceeded"}


def kimi_turn(calls: list[dict], first_index: int) -> str:
    body = "".join(
        f"<|tool_call_begin|>functions.{c['name']}:{first_index + i}<|tool_call_argument_begin|>"
        f"{json.dumps(c['arguments'], separators=(',', ':'))}<|tool_call_end|>"
        for i, c in enumerate(calls)
    )
    return f"<|tool_calls_section_begin|>{body}<|tool_calls_section_end|>"


def reference_turns(scenario: dict) -> list[str]:
    """One call per turn, or all calls in one parallel turn when that is what fits in max_steps."""
    calls = scenario["expected_calls"]
    groups = [[c] for c in calls] if len(calls) + 1 <= scenario["max_steps"] else [calls]
    turns, index = [], 0
    for group in groups:
        turns.append(kimi_turn(group, index))
        index += len(group)
    return turns + [f"Here you go: {scenario['expected_answer'] or 'done'}."]


class ScriptedBackend:
    """Backend protocol; `generate` answers each conversation with its scenario's next reference turn."""

    name = "scripted"

    def __init__(self, scenarios: list[dict]) -> None:
        self.turns = {s["messages"][0]["content"]: reference_turns(s) for s in scenarios}
        self.conversations: list[list[dict]] = []

    def render_chat(self, messages, tools):
        self.conversations.append(json.loads(json.dumps(messages)))
        return [len(self.conversations) - 1]

    def generate(self, prompts, max_new_tokens, stop, temperature=0.0, seed=None):
        texts = []
        for (handle,) in prompts:
            messages = self.conversations[handle]
            done = sum(m["role"] == "assistant" for m in messages)
            texts.append(self.turns[messages[0]["content"]][done])
        return texts

    def tokenize(self, text, add_bos=True):
        raise NotImplementedError("scripted turns need no tokenizer")

    def score_windows(self, windows, top_k):
        raise NotImplementedError

    def loglikelihood(self, requests):
        raise NotImplementedError

    def describe(self):
        return {"backend": self.name}


def test_reference_trajectories_succeed(tmp_path):
    config = ToolcallSuiteConfig(
        name="toolcall", kind="toolcall", version=1, scenarios_file=SCENARIOS_FILE, parser="kimi_k2",
        teacher_forced=False,  # scripted turns: no model to score them
    )
    measurement = TOOLCALL_SUITE.measure(config, ScriptedBackend(SCENARIOS), tmp_path)
    metrics = {m.name: m for m in measurement.metrics}
    failed = [r["id"] for r in measurement.samples if not r["success"]]
    assert failed == []
    assert metrics["task_success"].value == 1.0 and metrics["task_success"].stderr == 0.0
    assert metrics["schema_accuracy"].value == 1.0
    assert metrics["wrong_tool_rate"].value == 0.0
    assert metrics["malformed_rate"].value == 0.0
    assert metrics["trigger_accuracy"].value == 1.0
    rows = measurement.samples
    expected = {
        m.name: m.value
        for m in trigger_scores(
            [r["expected_trigger"] for r in rows], [r["first_step_trigger"] for r in rows]
        )
    }
    assert expected["trigger_f1"] == 1.0
    compared = {m.name: m.value for m in TOOLCALL_SUITE.compare(config, measurement, measurement)}
    assert compared["trigger_f1"] == 1.0 and compared["task_success_lost"] == 0


def test_failures_are_scored_not_raised(tmp_path):
    """A wrong tool, invalid arguments, then garbage: every call and turn is counted."""
    scenario = next(s for s in SCENARIOS if s["id"].endswith("order_status"))
    episode = _scenario_episode(scenario, 0)
    undeclared = next(
        n for n in ("get_weather", "add_to_cart", "convert_currency") if n not in scenario["tools"]
    )
    step(episode, kimi_turn([{"name": undeclared, "arguments": {"city": "Oslo"}}], 0), parse_kimi_k2)
    step(episode, kimi_turn([{"name": "get_order", "arguments": {"order_id": 7}}], 1), parse_kimi_k2)
    assert [c.status for c in episode.calls] == ["undeclared_tool", "invalid_arguments"]
    assert [json.loads(m["content"]).keys() for m in episode.messages if m["role"] == "tool"] == [
        {"error"}
    ] * 2
    step(episode, kimi_turn([{"name": "get_order", "arguments": {}}], 2).replace("{}", '{"order_id": NaN}'),
         parse_kimi_k2)
    assert episode.outcome == "malformed" and episode.steps == 3 and episode.malformed_steps == 1
    assert episode.calls[-1].errors == ("arguments are not valid JSON: non-finite number NaN is not JSON",)
    assert episode.environment.state() == ToolEnvironment(scenario["initial_state"]).state()  # nothing ran
    json.dumps(episode.to_json(), allow_nan=False)


def test_truncated_call_is_dropped_as_the_engine_drops_it():
    """vLLM returns no call for a call cut off before <|tool_call_end|>: the turn is the text before it."""
    scenario = next(s for s in SCENARIOS if s["id"].endswith("order_status"))
    episode = _scenario_episode(scenario, 0)
    step(episode, "Looking.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_order:0<|tool_call_argument_b",
         parse_kimi_k2)
    assert episode.outcome == "answer" and episode.final_answer == "Looking."
    assert episode.first_step_trigger is False and episode.dropped_steps == 1 and episode.malformed_steps == 0
    assert episode.k2vv == {
        "finish_reason": "stop",
        "tool_calls_valid": None,
        "message": {"role": "assistant", "content": episode.outputs[0], "tool_calls": None},
    }


def test_endpoint_call_ids_are_kept():
    """Chat mode: the server's parsed calls are scored and its ids (`call_9f2c`) become the history's ids."""
    scenario = next(s for s in SCENARIOS if s["id"].endswith("order_status"))
    episode = _scenario_episode(scenario, 0)
    order_id = scenario["expected_calls"][0]["arguments"]["order_id"]
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_9f2c", "type": "function",
             "function": {"name": "get_order", "arguments": json.dumps({"order_id": order_id})}}
        ],
    }
    step(episode, EndpointText(kimi_k2_text(message), message, "tool_calls"), parse_kimi_k2)
    assert [c.status for c in episode.calls] == ["ok"]
    assert episode.messages[-2]["tool_calls"][0]["id"] == "call_9f2c"
    assert episode.messages[-1]["tool_call_id"] == "call_9f2c"
    assert episode.k2vv["finish_reason"] == "tool_calls" and episode.k2vv["tool_calls_valid"] is True


def test_endpoint_non_finite_arguments_are_written_as_json():
    """An endpoint's object arguments holding NaN: malformed for quantgate, valid for K2VV, strict JSON in the row."""
    scenario = next(s for s in SCENARIOS if s["id"].endswith("order_status"))
    episode = _scenario_episode(scenario, 0)
    message = {"role": "assistant", "content": "ok \udc01", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_order", "arguments": {"order_id": float("nan")}}}
    ]}
    step(episode, EndpointText(kimi_k2_text(message | {"content": "ok"}), message, "tool_calls"), parse_kimi_k2)
    assert episode.outcome == "malformed" and episode.calls[0].status == "malformed"
    assert episode.k2vv["tool_calls_valid"] is False  # order_id must be a string
    row = json.dumps(episode.to_json(), allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert b'"order_id": "NaN"' in row


def test_lone_surrogate_output_is_written_as_json():
    scenario = next(s for s in SCENARIOS if s["id"].endswith("order_status"))
    episode = _scenario_episode(scenario, 0)
    step(episode, "broken \ud800 text", parse_kimi_k2)
    assert episode.outcome == "malformed" and episode.outputs == ["broken \ufffd text"]
    json.dumps(episode.to_json(), ensure_ascii=False).encode("utf-8")


def test_deep_arguments_are_malformed_and_render(tokenizer):
    """Nested 490 deep: a malformed call (nesting limit), and the conversation still renders."""
    scenario = next(s for s in SCENARIOS if s["id"].endswith("order_status"))
    episode = _scenario_episode(scenario, 0)
    deep = '{"x":' + "[" * 490 + "]" * 490 + "}"
    step(episode, kimi_turn([{"name": "get_order", "arguments": {}}], 0).replace("{}", deep), parse_kimi_k2)
    assert episode.outcome == "malformed" and episode.calls[0].errors == ("arguments nest deeper than 64 levels",)
    tokenizer.apply_chat_template(episode.messages, tools=episode.tools, add_generation_prompt=True)


@pytest.fixture(scope="module")
def tokenizer(bundled_model: Path):
    return AutoTokenizer.from_pretrained(bundled_model)


MARKERS = st.sampled_from(
    [
        "<|tool_calls_section_begin|>",
        "<|tool_calls_section_end|>",
        "<|tool_call_begin|>",
        "<|tool_call_argument_begin|>",
        "<|tool_call_end|>",
        "<|im_end|>",
        "functions.get_order:0",
        "functions.issue_refund:1",
        "functions.nope:3",
        '{"order_id":"O-73269"}',
        '{"order_id":"O-73269","amount":5,"reason":"late"}',
        '{"amount":-1}',
        "{",
        "}",
        "[",
        "]",
        '"',
        ":",
        "NaN",
        "1e999",
        "\\u0000",
        " ",
    ]
)
MODEL_OUTPUT = st.one_of(
    st.text(max_size=200), st.lists(st.one_of(MARKERS, st.text(max_size=8)), max_size=24).map("".join)
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outputs=st.lists(MODEL_OUTPUT, min_size=1, max_size=4))
def test_any_output_steps_without_raising(outputs, tokenizer):
    scenario = next(s for s in SCENARIOS if s["id"].endswith("refund_full"))
    episode: Episode = _scenario_episode(scenario, 0)
    for text in outputs:
        if episode.done:
            break
        step(episode, text, parse_kimi_k2)
        tokenizer.apply_chat_template(episode.messages, tools=episode.tools, add_generation_prompt=True)
    assert episode.outcome in OUTCOMES
    assert episode.steps <= episode.max_steps
    assert episode.first_step_trigger is not None
    assert all(c.status in {"ok", "malformed", "undeclared_tool", "invalid_arguments"} for c in episode.calls)
    assert episode.malformed_steps == (episode.outcome == "malformed")
    json.dumps(episode.to_json())


def test_measurement_rows_are_json(tmp_path):
    config = ToolcallSuiteConfig(
        name="t", kind="toolcall", version=1, scenarios_file=SCENARIOS_FILE, limit=3, parser="kimi_k2",
        teacher_forced=False,
    )
    measurement: Measurement = TOOLCALL_SUITE.measure(config, ScriptedBackend(SCENARIOS), tmp_path)
    assert len(measurement.samples) == 3
    json.dumps(measurement.samples)


def test_oversized_numbers_are_malformed_not_raised():
    """Python refuses to parse integers past 4300 digits; a model can emit one."""
    scenario = next(s for s in SCENARIOS if s["id"].endswith("order_status"))
    episode = _scenario_episode(scenario, 0)
    step(
        episode,
        kimi_turn([{"name": "get_order", "arguments": {}}], 0).replace("{}", '{"x":' + "9" * 5000 + "}"),
        parse_kimi_k2,
    )
    assert episode.outcome == "malformed" and episode.calls[0].status == "malformed"


def test_schema_dialect_is_honoured():
    """`$schema` picks the validator (draft-04's boolean exclusiveMaximum); a broken schema is an error, not a crash."""
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
              "properties": {"n": {"type": "number", "maximum": 5, "exclusiveMaximum": True}}}
    tools = [{"type": "function", "function": {"name": "limit", "parameters": draft4}},
             {"type": "function", "function": {"name": "odd", "parameters": {"$schema": ["x"]}}}]
    assert declared_schema_errors(tools, "limit", {"n": 4}) == []
    assert declared_schema_errors(tools, "limit", {"n": 5}) == ["5 is greater than or equal to the maximum of 5"]
    assert declared_schema_errors(tools, "odd", {}) == [
        "the tool's parameters are not a valid JSON schema: `$schema` is not a string"
    ]
