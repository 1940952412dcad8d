"""Suite `benchmark`: lm-eval tasks on the already loaded model, per-sample flips against the baseline.

Tasks are lm-eval task names: the project's own YAMLs under `include_path` (held-out data of the
bundled model; their relative `data_files` are resolved against the YAML's folder, since lm-eval
would read them relative to the working directory), or any task of lm-eval's registry. The model is
not loaded twice: the backend's transformers model and tokenizer are wrapped in lm-eval's `HFLM`;
an endpoint backend (`openai`) gives lm-eval's `local-completions` model instead (token-id requests).
Per-sample correctness (the task's `metric` in each logged sample) is kept; against the baseline each
task reports flips (correct->wrong, wrong->correct) and an exact McNemar test. Continuous per-item
measures (log-prob margins, the gold answer's NLL: harness.suites.benchmark_items) are kept in the same
rows and compared with a paired t-test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from harness.backends.base import Backend
from harness.paired import binomial_stderr, paired_metrics
from harness.suites.base import Measurement, SuiteConfig, SuiteKind, register_suite
from harness.suites.benchmark_items import item_measures, item_metrics
from harness.suites.task_files import include_folder, task_files
from quantgate.core.metrics import Metric
from quantgate.core.strict import StrictModel


class LmEvalTask(StrictModel):
    name: str  # lm-eval task name
    metric: str = "acc"  # per-sample metric whose value 1 means correct (acc, exact_match, ...)
    filter: str = "none"  # lm-eval filter whose responses are scored


class BenchmarkSuiteConfig(SuiteConfig):
    kind: Literal["benchmark"]
    tasks: list[LmEvalTask] = Field(min_length=1)
    include_path: str = "suites/lmeval"  # local task YAMLs (relative to the project root)
    limit: int | None = Field(None, ge=1)  # first N documents per task
    num_fewshot: int | None = Field(None, ge=0)
    batch_size: int = Field(8, ge=1)  # "auto" probes batch sizes and is slower on CPU
    seed: int = 1234
    trust_task_code: bool = False  # allow lm-eval `!function` code in the include_path's task YAMLs


def _absolute_data_files(data_files: Any, folder: Path) -> Any:
    if isinstance(data_files, str):
        return data_files if Path(data_files).is_absolute() else str((folder / data_files).resolve())
    if isinstance(data_files, list):
        return [_absolute_data_files(f, folder) for f in data_files]
    if isinstance(data_files, dict):
        return {split: _absolute_data_files(f, folder) for split, f in data_files.items()}
    return data_files


def _task_spec(manager: Any, name: str, include_path: Path) -> str | dict[str, Any]:
    """A local task as an inline config with absolute data files; a registry task by name."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = manager.task_index.get(name)
    if entry is None:
        local = sorted(
            e for e, v in manager.task_index.items() if v.yaml_path and include_path in v.yaml_path.parents
        )
        raise KeyError(
            f"unknown lm-eval task {name!r}; local tasks: {', '.join(local)}; or any lm-eval registry task"
        )
    if entry.yaml_path is None or include_path not in entry.yaml_path.parents:
        return name
    config = load_yaml(entry.yaml_path, resolve_func=True)
    dataset_kwargs = dict(config.get("dataset_kwargs") or {})
    if "data_files" in dataset_kwargs:
        dataset_kwargs["data_files"] = _absolute_data_files(
            dataset_kwargs["data_files"], entry.yaml_path.parent
        )
        config["dataset_kwargs"] = dataset_kwargs
    return config


def _correct(sample: dict[str, Any], task: LmEvalTask) -> bool:
    if task.metric not in sample:
        raise KeyError(
            f"task {task.name}: logged samples have no metric {task.metric!r}; "
            f"set `metric` to one of: {', '.join(k for k in sample if k not in _SAMPLE_FIELDS)}"
        )
    return float(sample[task.metric]) == 1.0


_SAMPLE_FIELDS = {
    "doc_id",
    "doc",
    "target",
    "arguments",
    "resps",
    "filtered_resps",
    "filter",
    "metrics",
    "doc_hash",
    "prompt_hash",
    "target_hash",
}


def measure(config: BenchmarkSuiteConfig, backend: Backend, out_dir: Path) -> Measurement:
    from lm_eval.models.huggingface import HFLM

    if hasattr(backend, "lm_eval_model"):  # an endpoint: lm-eval's local-completions
        return _measure(config, backend.lm_eval_model(config.batch_size), out_dir)
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


def _measure(config: BenchmarkSuiteConfig, lm: Any, out_dir: Path) -> Measurement:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    task_files(config.include_path, config.trust_task_code)  # refuses task code unless trusted
    include_path = include_folder(config.include_path)
    # Indexing lm-eval's whole registry takes ~20 s: only done when a task is not a local one.
    manager = TaskManager(include_path=str(include_path), include_defaults=False)
    if any(task.name not in manager.task_index for task in config.tasks):
        manager = TaskManager(include_path=str(include_path))
    specs = [_task_spec(manager, task.name, include_path) for task in config.tasks]
    results = simple_evaluate(
        model=lm,
        tasks=specs,
        task_manager=manager,
        limit=config.limit,
        num_fewshot=config.num_fewshot,
        log_samples=True,
        bootstrap_iters=0,
        random_seed=config.seed,
        numpy_random_seed=config.seed,
        torch_random_seed=config.seed,
        fewshot_random_seed=config.seed,
    )
    rows: list[dict[str, Any]] = []
    metrics: list[Metric] = []
    for task in config.tasks:
        logged = sorted(
            (s for s in results["samples"][task.name] if s.get("filter", "none") == task.filter),
            key=lambda s: s["doc_id"],
        )
        measures = item_measures(lm, logged, results["configs"][task.name])
        task_rows = [
            {
                "task": task.name,
                "doc_id": s["doc_id"],
                "correct": _correct(s, task),
                "target": str(s["target"]),
                "response": s["filtered_resps"][0] if s["filtered_resps"] else None,
            }
            | measured
            for s, measured in zip(logged, measures, strict=True)
        ]
        hits = sum(r["correct"] for r in task_rows)
        metrics.append(
            Metric(
                f"{task.name}/{task.metric}",
                hits / len(task_rows) if task_rows else 0.0,
                "higher",
                binomial_stderr(hits, len(task_rows)),
                n=len(task_rows),
            )
        )
        rows += task_rows
    extra = {
        "lm_eval_results": results["results"],
        "lm_eval_versions": results.get("versions"),
        "n_samples": results.get("n-samples"),
    }
    return Measurement(metrics=metrics, samples=rows, out_dir=out_dir, extra=extra)


def compare(config: BenchmarkSuiteConfig, variant: Measurement, baseline: Measurement) -> list[Metric]:
    metrics: list[Metric] = []
    for task in config.tasks:
        base = {r["doc_id"]: r["correct"] for r in baseline.samples if r["task"] == task.name}
        var = {r["doc_id"]: r["correct"] for r in variant.samples if r["task"] == task.name}
        if base.keys() != var.keys():
            raise ValueError(f"task {task.name}: variant and baseline scored different documents")
        docs = sorted(base)
        metrics += paired_metrics(
            f"{task.name}/{task.metric}", [base[d] for d in docs], [var[d] for d in docs]
        )
        base_rows = {r["doc_id"]: r for r in baseline.samples if r["task"] == task.name}
        var_rows = {r["doc_id"]: r for r in variant.samples if r["task"] == task.name}
        metrics += item_metrics(task.name, [base_rows[d] for d in docs], [var_rows[d] for d in docs])
    return metrics


def inputs(config: BenchmarkSuiteConfig) -> dict[str, str]:
    return task_files(config.include_path, config.trust_task_code)


BENCHMARK_SUITE = register_suite(SuiteKind("benchmark", BenchmarkSuiteConfig, measure, compare, inputs=inputs))
