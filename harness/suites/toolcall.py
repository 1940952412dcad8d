"""Suite `toolcall`: multi-step tool-calling episodes graded by final state, and K2VV single-step requests.

Scenarios (`scenarios_file`, held-out JSON lines: tools, initial_state, messages, expected_calls,
expected_state, expected_answer, max_steps) run as multi-step episodes against a `ToolEnvironment`;
K2-Vendor-Verifier requests (`requests_file`) run as single-step episodes, written back as a K2VV results
file (`k2vv_results.jsonl`) and, with `reference_results` (a K2VV results file, e.g. Moonshot's official
one), scored against it with K2VV's own F1 without a baseline run. All episodes of a measurement step
together (`harness.toolcall.loop`); metrics are in `harness.toolcall.metrics`. Against the baseline, the
variant is also scored teacher-forced along the baseline's own call steps (`harness.toolcall.teacher`:
paired NLL, KL and exact-call agreement per step, kept in `call_steps.jsonl`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from harness.backends.base import Backend
from harness.suites.base import Measurement, SuiteConfig, SuiteKind, register_suite
from harness.suites.paths import suite_data_path
from harness.toolcall import teacher
from harness.toolcall.k2vv import K2VV_RESULTS, read_requests, read_results, request_episode, result_line, write_results
from harness.toolcall.loop import Episode, Generate, detect_parser, run_episodes
from harness.toolcall.metrics import compare_metrics, k2vv_reference_metrics, measure_metrics, task_success
from harness.toolcall.parsers import ParserSetting, parser_for
from harness.toolcall.scenarios import read_scenarios
from harness.tools.environment import ToolEnvironment
from harness.tools.schemas import TOOL_SCHEMAS
from quantgate.core.errors import InputError
from quantgate.core.metrics import Metric


class ToolcallSuiteConfig(SuiteConfig):
    kind: Literal["toolcall"]
    scenarios_file: Path | None = None  # multi-step scenarios
    requests_file: Path | None = None  # K2-Vendor-Verifier request lines
    reference_results: Path | None = None  # a K2VV results file to score the requests against (by data_index)
    k2vv_max_tokens: int | None = Field(None, ge=1)  # overrides each request's max_tokens (K2VV's --max-tokens)
    k2vv_temperature: float | None = Field(None, ge=0.0)  # overrides each request's temperature
    limit: int | None = Field(None, ge=1)  # first N scenarios and first N requests
    parser: ParserSetting = "auto"  # a tool-call parser name, or "auto": recognised from the chat template
    max_new_tokens: int = Field(96, ge=1)  # per assistant turn (longest reference turn: 54 tokens)
    max_context_tokens: int = Field(4096, ge=64)  # an episode whose next prompt would exceed it ends
    stop: list[str] = ["<|im_end|>", "[EOS]"]
    samples: int = Field(1, ge=1)  # episodes per prompt; pass^k for k = 2..samples
    temperature: float = Field(0.0, ge=0.0)  # 0: greedy
    seed: int = 0
    # teacher-forced call steps along the baseline's trajectory (harness.toolcall.teacher): baseline
    # log-probabilities kept per token (+ a tail bucket); null: the full vocabulary
    call_top_k: int | None = Field(64, ge=1)
    teacher_forced: bool = True  # false: episodes only, no call steps scored

    @model_validator(mode="after")
    def _consistent(self) -> ToolcallSuiteConfig:
        if self.scenarios_file is None and self.requests_file is None:
            raise ValueError("set scenarios_file, requests_file or both")
        if self.reference_results is not None and self.requests_file is None:
            raise ValueError("reference_results needs requests_file")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 needs temperature > 0: greedy samples are identical")
        return self


def _scenario_episode(scenario: dict[str, Any], sample: int) -> Episode:
    return Episode(
        episode_id=scenario["id"],
        sample=sample,
        tools=[TOOL_SCHEMAS[name] for name in scenario["tools"]],
        messages=json.loads(json.dumps(scenario["messages"])),
        max_steps=scenario["max_steps"],
        environment=ToolEnvironment(scenario["initial_state"]),
        reference_tools=frozenset(call["name"] for call in scenario["expected_calls"]),
    )


def _generator(config: ToolcallSuiteConfig, backend: Backend) -> Generate:
    def generate(prompts: list[list[int]], max_new_tokens: int | None, temperature: float | None) -> list[str]:
        return backend.generate(
            prompts,
            max_new_tokens or config.max_new_tokens,
            config.stop,
            temperature=config.temperature if temperature is None else temperature,
            seed=config.seed,
        )

    return generate


def measure(config: ToolcallSuiteConfig, backend: Backend, out_dir: Path) -> Measurement:
    """One model's episodes, and its own call steps scored teacher-forced (what a variant is compared along)."""
    measurement, scenario_episodes = _run(config, backend, out_dir)
    if not config.teacher_forced:
        return measurement
    if getattr(backend, "toolcall_mode", "raw") == "chat":  # the server parsed the turns: no raw tokens to score
        scenario_episodes = []
    steps = teacher.call_steps(
        [e for e in scenario_episodes if e.sample == 0], backend, config.stop[0], config.max_new_tokens
    )
    measurement.extra |= teacher.measure_baseline(backend, steps, config.call_top_k, out_dir)
    return measurement


def measure_against(
    config: ToolcallSuiteConfig, backend: Backend, out_dir: Path, baseline: Measurement
) -> Measurement:
    """The variant's own episodes, and its scores along the baseline's call steps (`call_steps.jsonl`)."""
    measurement, _ = _run(config, backend, out_dir)
    if not config.teacher_forced:
        return measurement
    rows = teacher.measure_variant(backend, baseline.out_dir, config.call_top_k is None, out_dir)
    measurement.extra["call_steps"] = len(rows)
    return measurement


def _run(config: ToolcallSuiteConfig, backend: Backend, out_dir: Path) -> tuple[Measurement, list[Episode]]:
    scenarios = (
        read_scenarios(suite_data_path(config.scenarios_file))[: config.limit] if config.scenarios_file else []
    )
    request_file = read_requests(suite_data_path(config.requests_file)) if config.requests_file else None
    requests = request_file.requests[: config.limit] if request_file else []
    scenario_episodes = [_scenario_episode(s, k) for s in scenarios for k in range(config.samples)]
    request_episodes = [
        request_episode(r, i, k, max_tokens=config.k2vv_max_tokens, temperature=config.k2vv_temperature)
        for i, r in enumerate(requests)
        for k in range(config.samples)
    ]
    parser = detect_parser(backend) if config.parser == "auto" else config.parser

    rounds = run_episodes(
        scenario_episodes + request_episodes,
        backend.render_chat,
        _generator(config, backend),
        parser_for(parser),
        max_new_tokens=config.max_new_tokens,
        max_context_tokens=config.max_context_tokens,
    )

    rows = []
    for scenario, episode in zip(
        (s for s in scenarios for _ in range(config.samples)), scenario_episodes, strict=True
    ):
        final_state = episode.environment.state()
        rows.append(
            episode.to_json()
            | {
                "source": "scenario",
                "success": task_success(
                    episode.outcome,
                    episode.final_answer,
                    final_state,
                    scenario["expected_state"],
                    scenario["expected_answer"],
                ),
                "expected_trigger": bool(scenario["expected_calls"]),
                "reference_tools": sorted(episode.reference_tools),
                "state_matches": final_state == scenario["expected_state"],
            }
        )
    request_rows = [
        e.to_json()
        | {"source": "request", "success": None, "expected_trigger": None, "reference_tools": None}
        for e in request_episodes
    ]
    rows += request_rows
    extra: dict[str, Any] = {"parser": parser, "generate_rounds": rounds, "episodes": len(rows)}
    metrics = measure_metrics(rows)
    if request_file is not None:
        extra["k2vv_skipped_lines"] = request_file.skipped
        model = str(backend.describe().get("model") or backend.name)
        model = Path(model).name if backend.name == "hf" else model  # a served name, or the checkpoint folder's
        first_samples = [(r, row) for r, row in zip(
            (r for r in requests for _ in range(config.samples)), request_rows, strict=True) if row["sample"] == 0]
        write_results(out_dir / K2VV_RESULTS, [result_line(r, row, model) for r, row in first_samples])
    if config.reference_results is not None:
        reference = read_results(suite_data_path(config.reference_results))
        extra["k2vv_reference_skipped_lines"] = reference.skipped
        scored = k2vv_reference_metrics(reference.finish_reasons, [row for _, row in first_samples])
        if scored[0].n == 0:
            raise InputError(f"{config.reference_results}: no data_index in common with {config.requests_file}")
        metrics += scored
    return Measurement(metrics=metrics, samples=rows, out_dir=out_dir, extra=extra), scenario_episodes


def compare(config: ToolcallSuiteConfig, variant: Measurement, baseline: Measurement) -> list[Metric]:
    metrics = compare_metrics(baseline.samples, variant.samples)
    calls = variant.out_dir / teacher.ROWS
    if calls.exists():  # measured against the baseline's call steps
        rows = [json.loads(line) for line in calls.read_text().splitlines()]
        metrics += teacher.call_metrics(rows)
    return metrics


def validate(config: ToolcallSuiteConfig) -> None:
    if config.scenarios_file is not None:
        read_scenarios(config.scenarios_file)


TOOLCALL_SUITE = register_suite(
    SuiteKind("toolcall", ToolcallSuiteConfig, measure, compare, measure_against, validate=validate)
)
