"""`quantgate drill`: how often each gate of a plan cries wolf. The baseline is measured against itself
under other settings that leave the model the same, N times each, and judged by every gate of the plan;
every row that does not pass (a failure, or a value the suite could not give) is a false alarm.

The reference is the baseline measured once under the plan's default settings (as the nightly measures
it). A copy of the same checkpoint ("drill") is then measured against it, per suite under the conditions
that suite can vary (`Condition.applies`; the table shows "-" elsewhere):
  - `reference`: once under the same settings, not counted: what the history gates compare with;
  - `repeat`:    the same settings again (a deterministic backend gives identical bytes); every suite;
  - `threads=T`: another CPU thread count (another order of floating-point reductions); every suite but
                 latency, whose timings at other threads are another measurement, not the same one;
  - `batch=B`:   another batch size (other padding and matrix shapes); suites with a `batch_size`
                 (perplexity, benchmark); tool-call and long-horizon suites run one conversation at a time;
  - `backend=vllm`: the copy measured through a real vLLM server, as the nightly's serve mode measures a
                 variant, against the baseline served the same way (quantgate/nightly/drill_served.py says
                 why that reference, and how the history gates apply); every suite serve mode can measure
                 (not latency). Drilled with `--backend vllm`, or by default when the plan has `serve:`.
The first three are deterministic (target: no false alarm); `backend=vllm` is labelled nondeterministic (an
engine batching concurrent requests; target: at most 5 %), and the table gives its rate apart.
Latency suites are drilled under `repeat`: the copy is timed beside the baseline (ABAB pairs, as the
nightly times every variant), so each speedup is the baseline's against itself and should be 1. Besides
the plan's own latency gates, every speedup is judged by candidate gates of the form the plan's header
proposes, "not significantly slower than F x the baseline" (`speedup_<phase>_high.<shape> >= F` for F in
LATENCY_FACTORS): an unstable speedup (no number) is a false alarm, as a nightly would report it missing.
History gates on latency metrics are left out: timings are never identical, so a rerun would be called
nondeterministic; they are not meaningful there.
`--dtype bfloat16` runs the whole drill in bfloat16, baseline included. bfloat16 against float32 is not a
condition: it is another model numerically (KL about 1e-3 on the bundled model), a real change the gates
should see, not a false alarm. Serving-latency suites (their numbers are the server's timings) are not
drilled.

Each condition's copy is compared with the reference baseline through the baseline cache: the drill's
private cache holds the reference under the key of each condition's settings, so the copy under
`threads=1` is compared with the baseline measured under the default threads, not with a baseline
measured again under `threads=1`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.cache import BaselineCache, cache_key
from harness.evaluate import EvalRequest, backend_settings, evaluate
from harness.suites.base import SuiteConfig
from harness.suites.loader import load_suite
from quantgate.core.checkpoint import checkpoint_identity
from quantgate.core.errors import InputError
from quantgate.core.record import ResultRecord, read_results
from quantgate.gates.evaluate import GateRow
from quantgate.gates.evaluate import evaluate as evaluate_gates
from quantgate.gates.history import History, PreviousNightly
from quantgate.nightly.drill_served import ServedDrill, drill_serve
from quantgate.nightly.run import IN_PROCESS_KINDS, suite_ref
from quantgate.plan import Gate, Plan, PlanVariant, load_plan

DRILL = "drill"  # the copy's results folder name
NOT_DRILLED = ("serving_latency",)
LATENCY = "latency"
LATENCY_FACTORS = (0.5, 0.9)  # candidate gates: speedup's 95 % high end >= F (not significantly slower than F x)
CANDIDATE = " (candidate)"  # marks the drill's own latency gates in the table


@dataclass(frozen=True)
class Condition:
    name: str
    threads: int
    batch_size: int | None = None  # None: each suite's own
    threads_changed: bool = False
    backend: str | None = None  # measured through this engine's server (drill_served)

    @property
    def deterministic(self) -> bool:
        return self.backend is None

    def applies(self, config: SuiteConfig) -> bool:
        """Whether this condition varies anything for a suite of this config (module doc)."""
        if self.backend is not None:
            return config.kind not in IN_PROCESS_KINDS
        if self.batch_size is not None:
            return "batch_size" in type(config).model_fields
        return not (self.threads_changed and config.kind == LATENCY)


@dataclass(frozen=True)
class DrillRequest:
    plan_path: Path
    out: Path
    runs: int = 1
    threads: int | None = None  # the default settings' threads (default: torch's)
    dtype: str = "float32"
    suites: tuple[str, ...] = ()  # of the plan's suites, these only (default: every one not a latency suite)
    backends: tuple[str, ...] | None = None  # engines to serve the copy with; None: the plan's serve engine if any
    conditions: tuple[str, ...] = ()  # these conditions only (default: all)
    toolcall_mode: str | None = None  # the backend condition's tool-call mode (default: drill_served.drill_serve's)


@dataclass
class DrillOutcome:
    conditions: list[str]
    runs: int
    nondeterministic: list[str] = field(default_factory=list)  # of the conditions (target <= 5 %, not 0)
    # (metric, "<gate kind> <threshold>") -> condition -> [verdicts over runs]
    verdicts: dict[tuple[str, str], dict[str, list[str]]] = field(default_factory=dict)
    reasons: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # the false alarms' reasons

    # latency: "<suite>.speedup_<phase>.<shape>" -> one entry per run: "1.02 [0.97, 1.08]" or "unstable (...)"
    speedups: dict[str, list[str]] = field(default_factory=dict)

    def alarms(self, key: tuple[str, str], condition: str) -> tuple[int, int]:
        """(false alarms, runs) of a gate under a condition; a row that is not "pass" is a false alarm."""
        verdicts = self.verdicts[key].get(condition, [])
        return sum(v != "pass" for v in verdicts), len(verdicts)


def conditions(threads: int) -> list[Condition]:
    other = 1 if threads > 1 else 2
    return [
        Condition("repeat", threads), Condition(f"threads={other}", other, threads_changed=True),
        Condition("batch=1", threads, 1),
    ]  # fmt: skip


def latency_candidates(suite: str, config: SuiteConfig) -> list[Gate]:
    """Candidate latency gates: each shape's and phase's speedup not significantly below F x the baseline."""
    from harness.suites.latency import PHASES

    return [
        Gate(metric=f"{suite}.speedup_{phase}_high.b{batch}_p{length}", min_value=factor)
        for batch in config.batch_sizes for length in config.prompt_lengths for phase in PHASES
        for factor in LATENCY_FACTORS
    ]  # fmt: skip


def drill_plan(plan: Plan, entries: list[str], configs: list[SuiteConfig]) -> Plan:
    """The plan's gates on the drilled suites (plan entries, and their configs), each once and for every
    group, on the one copy; on latency suites without history gates and with the candidate gates."""
    names = [c.name for c in configs]
    gates: list[Gate] = []
    for gate in plan.gates:
        copy = gate.model_copy(update={"groups": None})
        timing = configs[names.index(gate.suite)].kind == LATENCY if gate.suite in names else False
        if timing and copy.history is not None:
            copy = copy.model_copy(update={"history": None}) if len(copy.thresholds()) > 1 else None
        if gate.suite in names and copy is not None and copy not in gates:
            gates.append(copy)
    gates += [g for c in configs if c.kind == LATENCY for g in latency_candidates(c.name, c) if g not in gates]
    if not gates:
        raise InputError(f"the plan has no gates on the drilled suites ({', '.join(names)})")
    variant = PlanVariant(name=DRILL, path=str(plan.model), group=DRILL, checkpoint=DRILL)
    update = {"name": f"{plan.name}-drill", "variants": [variant], "suites": entries, "gates": gates}
    return plan.model_copy(update=update)


def _alias_reference(cache: Path, identity: str, reference: EvalRequest, other: EvalRequest) -> None:
    """Make the drill's cache answer `other`'s settings with the baseline measured under `reference`'s."""
    store = BaselineCache(cache)
    for suite in other.suites:
        config = load_suite(suite)
        resolved = {c: config.model_copy(update={"batch_size": r.batch_size})
                    if r.batch_size is not None and "batch_size" in type(config).model_fields else config
                    for c, r in (("reference", reference), ("other", other))}  # fmt: skip
        source, target = (
            store.entry(resolved[c], cache_key(identity, resolved[c], backend_settings(r))[0])
            for c, r in (("reference", reference), ("other", other))
        )
        if target != source and not target.exists():
            shutil.copytree(source, target)


def _measure(request: EvalRequest) -> list[ResultRecord]:
    shutil.rmtree(request.out, ignore_errors=True)
    evaluate(request)
    return read_results(request.out / DRILL)


def run_drill(request: DrillRequest) -> DrillOutcome:
    import torch

    plan = load_plan(request.plan_path, locate=True)
    configs = {entry: load_suite(suite_ref(request.plan_path, entry)) for entry in plan.suites}
    chosen = [
        entry
        for entry, config in configs.items()
        if (not request.suites or config.name in request.suites) and config.kind not in NOT_DRILLED
    ]
    if not chosen:
        raise InputError(f"--suite: none of {list(request.suites)} is a drillable suite of the plan {plan.suite_names}")
    drill_plan(plan, chosen, [configs[e] for e in chosen])  # the plan has gates on them, else an input error
    threads = request.threads or torch.get_num_threads()
    cache, identity = request.out / "cache", checkpoint_identity(plan.model)
    backends = request.backends if request.backends is not None else (plan.serve.engine,) if plan.serve else ()
    served = [Condition(f"backend={b}", threads, backend=b) for b in backends]
    everything = _chosen(request, conditions(threads) + served)
    serves = {c.backend: drill_serve(plan, c.backend, request.dtype, threads, request.toolcall_mode)
              for c in everything if c.backend}  # fmt: skip

    def eval_request(out: Path, condition: Condition, entries: list[str], models: bool = True) -> EvalRequest:
        return EvalRequest(
            models=[plan.model] if models else [], model_names=[DRILL] if models else None,
            suites=[suite_ref(request.plan_path, e) for e in entries], out=out, cache_dir=cache, baseline=plan.model,
            threads=condition.threads, batch_size=condition.batch_size, dtype=request.dtype, write_baseline=not models,
        )  # fmt: skip

    default, baseline, history = Condition("reference", threads), [], None
    if any(c.deterministic for c in everything):  # the in-process reference (the backend condition has its own)
        evaluate(eval_request(request.out / "baseline", default, chosen, models=False))
        baseline = read_results(request.out / "baseline")
        untimed = [e for e in chosen if configs[e].kind != LATENCY]  # what history gates compare (module doc)
        reference = _measure(eval_request(request.out / "reference", default, untimed)) if untimed else []
        history = History(PreviousNightly("reference", "drill reference run", reference))
    kinds = {configs[e].name: configs[e].kind for e in chosen}
    nondeterministic = [c.name for c in everything if not c.deterministic]
    outcome = DrillOutcome([c.name for c in everything], request.runs, nondeterministic)
    for condition in everything:
        entries = [e for e in chosen if condition.applies(configs[e])]
        if not entries:
            continue
        drilled = drill_plan(plan, entries, [configs[e] for e in entries])
        if condition.backend is not None:
            _drill_served(outcome, condition, drilled, ServedDrill(
                plan, serves[condition.backend], DRILL, [suite_ref(request.plan_path, e) for e in entries],
                request.out / condition.name, cache,
            ))  # fmt: skip
            continue
        candidates = {g.metric for g in drilled.gates} - {g.metric for g in plan.gates}
        _alias_reference(cache, identity, eval_request(request.out, default, entries),
                         eval_request(request.out, condition, entries))  # fmt: skip
        for run in range(request.runs):
            results = _measure(eval_request(request.out / condition.name / str(run), condition, entries))
            report = evaluate_gates(drilled, baseline + results, history=history)
            for row in report.rows:
                row = _unstable(row, results) if row.verdict == "missing" else row
                _count(outcome, row, condition.name, row.metric in candidates)
            for result in results:
                if kinds[result.suite] == LATENCY:
                    _note_speedups(outcome, result)
    return outcome


def _chosen(request: DrillRequest, candidates: list[Condition]) -> list[Condition]:
    """The conditions `--condition` names (default: all), or an input error listing the known ones."""
    unknown = [c for c in request.conditions if c not in [e.name for e in candidates]]
    if unknown:
        raise InputError(f"--condition: unknown {', '.join(unknown)}; known: {', '.join(e.name for e in candidates)}")
    return [c for c in candidates if not request.conditions or c.name in request.conditions]


def _drill_served(outcome: DrillOutcome, condition: Condition, drilled: Plan, served: ServedDrill) -> None:
    """The backend condition: the copy through a fresh server per run, against the served baseline; its
    history gates against the copy served once before (drill_served's module doc)."""
    served.measure_reference()
    history = History(PreviousNightly("served reference", f"drill reference run through {condition.backend}",
                                      served.reference))  # fmt: skip
    for run in range(outcome.runs):
        results = served.measure_copy(served.out / str(run), f"run-{run}")
        for row in evaluate_gates(drilled, served.baseline + results, history=history).rows:
            _count(outcome, row, condition.name)


def _unstable(row: GateRow, results: list[ResultRecord]) -> GateRow:
    """A latency row without its speedup says why: the pair ratios were unstable (no number)."""
    suite, name = row.metric.split(".", 1)
    stem, _, shape = name.partition(".")
    phase = stem.removeprefix("speedup_").removesuffix("_low").removesuffix("_high").removesuffix("_cv")
    result = next((r for r in results if r.suite == suite), None)
    unstable = result.metric(f"unstable_{phase}.{shape}") if result is not None else None
    if unstable is None:
        return row
    return replace(row, reason=f"no {row.metric}: unstable, {unstable.unit} (a nightly reports it missing)")


def _note_speedups(outcome: DrillOutcome, result: ResultRecord) -> None:
    """Each side-by-side speedup of a latency result (the baseline against itself), or why it has none."""
    for metric in result.comparison or []:
        stem, _, shape = metric.name.partition(".")
        if stem.startswith("unstable_"):
            key = f"{result.suite}.speedup_{stem.removeprefix('unstable_')}.{shape}"
            outcome.speedups.setdefault(key, []).append(f"unstable ({metric.unit})")
        elif stem.startswith("speedup_") and not stem.endswith(("_low", "_high", "_cv")):
            low, high = (result.metric(f"{stem}_{end}.{shape}") for end in ("low", "high"))
            interval = f" [{low.value:.3f}, {high.value:.3f}]" if low is not None and high is not None else ""
            outcome.speedups.setdefault(f"{result.suite}.{metric.name}", []).append(f"{metric.value:.3f}{interval}")


def _count(outcome: DrillOutcome, row: GateRow, condition: str, candidate: bool = False) -> None:
    """One verdict of a gate: its metric, and its kind with its threshold (a plan may gate a metric at
    several thresholds, one per group); the drill's own latency gates are marked as candidates."""
    threshold = f"p<{row.threshold:g}" if row.gate in ("history", "no_significant_regression") else f"{row.threshold:g}"
    key = (row.metric, f"{row.gate} {threshold}{CANDIDATE if candidate else ''}")
    outcome.verdicts.setdefault(key, {}).setdefault(condition, []).append(row.verdict)
    if row.verdict != "pass":
        outcome.reasons.setdefault(key, []).append(f"{condition}: {row.reason}")


NONDETERMINISTIC_RATE = "nondeterministic rate (target <= 5 %)"


def rate_columns(outcome: DrillOutcome) -> list[str]:
    """The rate columns: over the deterministic conditions (target 0), and over the nondeterministic ones."""
    return ["false-alarm rate"] + ([NONDETERMINISTIC_RATE] if outcome.nondeterministic else [])


def rows(outcome: DrillOutcome, dash: str = "-") -> list[tuple[str, ...]]:
    """Per gate: metric, gate, "alarms/runs" per condition, then the rates of `rate_columns`."""
    lines = []
    for key in outcome.verdicts:
        counts = {c: outcome.alarms(key, c) for c in outcome.conditions}
        cells = [f"{failed}/{runs}" if runs else dash for failed, runs in counts.values()]
        rates = []
        for nondeterministic in [False] + ([True] if outcome.nondeterministic else []):
            chosen = [n for c, n in counts.items() if (c in outcome.nondeterministic) == nondeterministic]
            alarms, total = sum(a for a, _ in chosen), sum(r for _, r in chosen)
            rates.append(f"{alarms / total:.0%}" if total else dash)
        lines.append((*key, *cells, *rates))
    return lines


def table(outcome: DrillOutcome) -> str:
    """Markdown: false alarms / runs per gate and condition, and the rates (`rate_columns`)."""
    header = ["metric", "gate", *outcome.conditions, *rate_columns(outcome)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(outcome)]
    return "\n".join(lines) + "\n"


def targets(outcome: DrillOutcome) -> str:
    deterministic = [c for c in outcome.conditions if c not in outcome.nondeterministic]
    parts = [f"no false alarm under {', '.join(deterministic)} (deterministic)"] if deterministic else []
    if outcome.nondeterministic:
        parts.append(f"at most 5 % under {', '.join(outcome.nondeterministic)} (nondeterministic)")
    return "Targets: " + "; ".join(parts) + "."


def speedup_table(outcome: DrillOutcome) -> str:
    """Markdown: each latency speedup of the baseline against itself per run, with its 95 % interval."""
    if not outcome.speedups:
        return ""
    header = ["speedup (baseline / itself)", *(f"run {i + 1}" for i in range(outcome.runs))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([name, *runs]) + " |" for name, runs in outcome.speedups.items()]
    return "\n".join(lines) + "\n"


def write_outcome(outcome: DrillOutcome, request: DrillRequest) -> Path:
    """drill.md (the table, then every false alarm's reason) and drill.json beside it; returns drill.md."""
    request.out.mkdir(parents=True, exist_ok=True)
    notes = [f"- {m} {g}: {reason}" for (m, g), reasons in outcome.reasons.items() for reason in reasons]
    text = (
        f"# quantgate drill: {request.plan_path.name}, {request.runs} run(s) per condition, {request.dtype}\n\n"
        + table(outcome)
        + f"\n{targets(outcome)}\n"
        + ("\n## Latency side by side\n\n" + speedup_table(outcome) if outcome.speedups else "")
        + ("\n## False alarms\n\n" + "\n".join(notes) + "\n" if notes else "\nNo false alarm.\n")
    )
    (request.out / "drill.md").write_text(text)
    data = {
        "plan": str(request.plan_path), "runs": request.runs, "dtype": request.dtype, "conditions": outcome.conditions,
        "nondeterministic": outcome.nondeterministic,
        "gates": [{"metric": m, "gate": g, "verdicts": v} for (m, g), v in outcome.verdicts.items()],
        "false_alarms": [{"metric": m, "gate": g, "reasons": r} for (m, g), r in outcome.reasons.items()],
        "speedups": outcome.speedups,
    }  # fmt: skip
    (request.out / "drill.json").write_text(json.dumps(data, indent=2) + "\n")
    return request.out / "drill.md"
