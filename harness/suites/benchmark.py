"""Suite `benchmark`: lm-eval tasks on the already loaded model, per-sample flips against the baseline.

Tasks are lm-eval task names: the project's own YAMLs under `include_path` (held-out data of the
bundled model; their relative `data_files` are resolved against the YAML's folder, since lm-eval
would read them relative to the working directory), or any task of lm-eval's registry. The model is
not loaded twice: the backend's transformers model and tokenizer are wrapped in lm-eval's `HFLM`;
an endpoint backend (`openai`) gives lm-eval's `local-completions` model instead (token-id requests).
Per-sample correctness (the task's metric in each logged sample) is kept; against the baseline each
task reports flips (correct->wrong, wrong->correct) and an exact McNemar test. The metric and filter
of each task come from the task itself unless the entry names them, and a group is scored with
lm-eval's own aggregation, its flips counted per subtask (harness.suites.lmeval_tasks).
Continuous per-item measures (log-prob margins, the gold answer's NLL: harness.suites.benchmark_items)
are kept in the same rows and compared with a paired t-test.
The config takes lm-eval's options under lm-eval's names (`num_fewshot`, `apply_chat_template`,
`gen_kwargs`, `limit`, `include_path`); `quantgate eval --tasks` builds one from the same flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from harness.backends.base import Backend
from harness.paired import binomial_stderr, paired_metrics
from harness.suites.base import Measurement, SuiteConfig, SuiteKind, register_suite
from harness.suites.benchmark_items import item_measures, item_metrics
from harness.suites.lmeval_tasks import (
    ScoredGroup,
    metric_filter_pairs,
    precheck,
    resolve,
    scored_rows,
    scored_samples,
    task_manager,
    without_environment_probe,
)
from harness.suites.task_files import include_folder, task_files
from quantgate.core.errors import InputError
from quantgate.core.metrics import Metric
from quantgate.core.strict import StrictModel


class LmEvalTask(StrictModel):
    name: str  # lm-eval task or group name
    metric: str | None = None  # per-sample metric whose value 1 means correct; None: the task's first
    filter: str | None = None  # lm-eval filter whose responses are scored; None: the task's first


GenerationValue = str | int | float | bool | list[str]


class BenchmarkSuiteConfig(SuiteConfig):
    """lm-eval's own options, under lm-eval's names (`lm_eval --tasks ... --num_fewshot ...`)."""

    kind: Literal["benchmark"]
    tasks: list[LmEvalTask] = Field(min_length=1)  # a bare name stands for {name: NAME}
    include_path: str = "suites/lmeval"  # local task YAMLs (relative to the project root)
    limit: int | None = Field(None, ge=1)  # first N documents per task
    num_fewshot: int | None = Field(None, ge=0)
    apply_chat_template: bool = False  # render prompts with the tokenizer's chat template
    gen_kwargs: dict[str, GenerationValue] | None = None  # generation settings over every generate_until task
    batch_size: int = Field(8, ge=1)  # "auto" probes batch sizes and is slower on CPU
    seed: int = 1234
    trust_task_code: bool = False  # allow lm-eval `!function` code in the include_path's task YAMLs
    # hf: the loaded model wrapped in lm-eval's HFLM (an endpoint: local-completions); vllm: lm-eval's own
    # in-process vLLM model on the checkpoint (GPU machines; the nightly's preflight refuses it elsewhere)
    lm_eval_model: Literal["hf", "vllm"] = "hf"

    @field_validator("tasks", mode="before")
    @classmethod
    def _bare_names(cls, tasks: Any) -> Any:
        if isinstance(tasks, list):
            return [{"name": t} if isinstance(t, str) else t for t in tasks]
        return tasks

    @model_validator(mode="after")
    def _distinct_tasks(self) -> BenchmarkSuiteConfig:
        names = [t.name for t in self.tasks]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"tasks: {', '.join(repeated)} listed twice")
        return self


def measure(config: BenchmarkSuiteConfig, backend: Backend, out_dir: Path) -> Measurement:
    from lm_eval.models.huggingface import HFLM

    if hasattr(backend, "lm_eval_model"):  # an endpoint: lm-eval's local-completions
        if config.lm_eval_model == "vllm":
            raise InputError(f"suite {config.name}: lm_eval_model vllm runs in process; an endpoint has its own server")
        return _measure(config, backend.lm_eval_model(config.batch_size), out_dir)
    if config.lm_eval_model == "vllm":
        return _measure(config, _lm_eval_vllm(config, backend), out_dir)
    model, tokenizer = getattr(backend, "model", None), getattr(backend, "tokenizer", None)
    if model is None or tokenizer is None:
        raise ValueError(
            f"suite benchmark wraps an in-process transformers model; backend {backend.name!r} has none"
        )
    # A checkpoint's generation_config.max_new_tokens would override the tasks' max_gen_toks (lm-eval
    # passes max_length); it is lifted for the run and put back.
    saved_max_new_tokens = model.generation_config.max_new_tokens
    model.generation_config.max_new_tokens = None
    try:
        return _measure(config, HFLM(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size), out_dir)
    finally:
        model.generation_config.max_new_tokens = saved_max_new_tokens


def _lm_eval_vllm(config: BenchmarkSuiteConfig, backend: Backend) -> Any:
    """lm-eval's `vllm` model on the backend's checkpoint, in this process (needs vllm and a GPU)."""
    try:
        from lm_eval.models.vllm_causallms import VLLM
    except ImportError as error:
        raise InputError(f"suite {config.name}: lm_eval_model vllm needs vllm installed ({error})") from None
    dtype = getattr(backend, "dtype", "auto")
    return VLLM(
        pretrained=str(backend.model_dir), dtype=dtype, batch_size=config.batch_size, seed=config.seed,
        gpu_memory_utilization=0.5,  # the hf backend holds the same checkpoint on the GPU beside it
    )  # fmt: skip


def _measure(config: BenchmarkSuiteConfig, lm: Any, out_dir: Path) -> Measurement:
    from lm_eval import simple_evaluate

    task_files(config.include_path, config.trust_task_code)  # refuses task code unless trusted
    manager = task_manager([t.name for t in config.tasks], include_folder(config.include_path))
    for task in config.tasks:  # a pair a task's YAML does not have fails before the model runs
        precheck(manager, task.name, task.metric, task.filter)
    with without_environment_probe():
        results = simple_evaluate(
            model=lm,
            tasks=[task.name for task in config.tasks],
            task_manager=manager,
            limit=config.limit,
            num_fewshot=config.num_fewshot,
            apply_chat_template=config.apply_chat_template,
            gen_kwargs=config.gen_kwargs,
            log_samples=True,
            bootstrap_iters=0,
            random_seed=config.seed,
            numpy_random_seed=config.seed,
            torch_random_seed=config.seed,
            fewshot_random_seed=config.seed,
        )
    rows: list[dict[str, Any]] = []
    metrics: list[Metric] = []
    scored = [resolve(task.name, task.metric, task.filter, results) for task in config.tasks]
    for entry in scored:
        for task in entry.tasks if isinstance(entry, ScoredGroup) else (entry,):
            pairs = metric_filter_pairs(results["results"][task.name])
            logged = scored_samples(task, results["samples"][task.name], pairs)
            measures = item_measures(lm, logged, results["configs"][task.name])
            task_rows = [row | measured for row, measured in zip(scored_rows(task, logged), measures, strict=True)]
            hits = sum(r["correct"] for r in task_rows)
            n = len(task_rows)
            metrics.append(Metric(task.key, hits / n, "higher", binomial_stderr(hits, n), n=n))
            rows += task_rows
        if isinstance(entry, ScoredGroup):  # lm-eval's own aggregate (its aggregate_metric_list)
            value = float(results["results"][entry.name][f"{entry.metric},{entry.filter}"])
            n = sum(m.n for m in metrics if m.name in {t.key for t in entry.tasks})
            metrics.append(Metric(entry.key, value, "higher", None, n=n))
    extra = {
        "lm_eval_results": results["results"],
        "lm_eval_groups": results.get("group_subtasks") or {},
        "lm_eval_versions": results.get("versions"),
        "n_samples": results.get("n-samples"),
        "scored": {e.key: {"metric": e.metric, "filter": e.filter} for e in scored},
    }
    return Measurement(metrics=metrics, samples=rows, out_dir=out_dir, extra=extra)


def compare(config: BenchmarkSuiteConfig, variant: Measurement, baseline: Measurement) -> list[Metric]:
    """Flips and McNemar per leaf task (a group's subtasks one by one); a group's aggregate by its delta."""
    metrics: list[Metric] = []
    leaves = dict.fromkeys((r["task"], r["metric"]) for r in baseline.samples)
    for task, metric in leaves:
        base = {r["doc_id"]: r["correct"] for r in baseline.samples if r["task"] == task}
        var = {r["doc_id"]: r["correct"] for r in variant.samples if r["task"] == task}
        if base.keys() != var.keys():
            raise ValueError(f"task {task}: variant and baseline scored different documents")
        docs = sorted(base)
        metrics += paired_metrics(f"{task}/{metric}", [base[d] for d in docs], [var[d] for d in docs])
        base_rows = {r["doc_id"]: r for r in baseline.samples if r["task"] == task}
        var_rows = {r["doc_id"]: r for r in variant.samples if r["task"] == task}
        metrics += item_metrics(task, [base_rows[d] for d in docs], [var_rows[d] for d in docs])
    groups = {r["group"] for r in baseline.samples if r.get("group")}
    base_values, var_values = {m.name: m for m in baseline.metrics}, {m.name: m for m in variant.metrics}
    for key in sorted(k for k in base_values if k.split("/", 1)[0] in groups and k in var_values):
        delta = var_values[key].value - base_values[key].value
        metrics.append(Metric(f"{key}_delta", delta, "higher", None, n=base_values[key].n))
    return metrics


def inputs(config: BenchmarkSuiteConfig) -> dict[str, str]:
    return task_files(config.include_path, config.trust_task_code)


BENCHMARK_SUITE = register_suite(SuiteKind("benchmark", BenchmarkSuiteConfig, measure, compare, inputs=inputs))
