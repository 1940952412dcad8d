"""lm-eval tasks for the benchmark suite: found (local YAMLs or lm-eval's registry), and scored by the
metric and filter each task itself has.

Local tasks: every task YAML under the suite's `include_path` is handed to lm-eval as an inline config
whose relative `data_files` are made absolute against the YAML's folder (lm-eval would read them
relative to the working directory), so a local group's subtasks find their data too.

Scoring: lm-eval reports each task's results as `metric,filter` keys; those keys are what a task has.
A task entry without `metric`/`filter` takes the task's first pair; one that names a pair the task does
not have, or a pair whose logged samples are missing, is an InputError that lists the pairs it has
(never a 0.0 from zero samples). A group is scored with lm-eval's own aggregate (its
`aggregate_metric_list`), and its subtasks one by one, each by the group's pair when it has it, else by
its own first pair; a group lm-eval gives no aggregate is an InputError listing its tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantgate.core.errors import InputError


@dataclass(frozen=True)
class ScoredTask:
    name: str  # a leaf task, as lm-eval names its samples
    metric: str
    filter: str
    group: str | None = None  # the requested group it was scored for

    @property
    def key(self) -> str:
        return f"{self.name}/{self.metric}"


@dataclass(frozen=True)
class ScoredGroup:
    name: str
    metric: str
    filter: str
    tasks: tuple[ScoredTask, ...]

    @property
    def key(self) -> str:
        return f"{self.name}/{self.metric}"


@contextmanager
def without_environment_probe() -> Iterator[None]:
    """Run `simple_evaluate` without the environment probe it appends to its results.

    lm-eval 0.4.13 ends every `simple_evaluate` with `get_git_commit_hash()` (which prints git's
    "fatal: not a git repository" outside a checkout) and `add_env_info()`, whose torch `collect_env`
    runs `pip list` in a subprocess: 3 to 25 s per call on these CPUs, for text quantgate never reads
    (the environment of a measurement is recorded in its own environment.json). Scores are untouched:
    the probe runs after evaluation. lm-eval's version is still recorded, as its own `add_env_info` does.
    """
    import lm_eval.evaluator as evaluator

    def versions_only(storage: dict[str, Any]) -> None:
        from importlib.metadata import version

        storage.update(lm_eval_version=version("lm_eval"), transformers_version=version("transformers"))

    saved = evaluator.get_git_commit_hash, evaluator.add_env_info
    evaluator.get_git_commit_hash, evaluator.add_env_info = (lambda: None), versions_only
    try:
        yield
    finally:
        evaluator.get_git_commit_hash, evaluator.add_env_info = saved


def _absolute_data_files(data_files: Any, folder: Path) -> Any:
    if isinstance(data_files, str):
        return data_files if Path(data_files).is_absolute() else str((folder / data_files).resolve())
    if isinstance(data_files, list):
        return [_absolute_data_files(f, folder) for f in data_files]
    if isinstance(data_files, dict):
        return {split: _absolute_data_files(f, folder) for split, f in data_files.items()}
    return data_files


def task_manager(names: list[str], include_path: Path) -> Any:
    """lm-eval's TaskManager with the local tasks inlined (absolute data files); the registry is indexed
    (~20 s) only when a name is not a local task or group. An unknown name is an InputError."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = TaskManager(include_path=str(include_path), include_defaults=False)
    local = sorted(manager.task_index)
    if any(name not in manager.task_index for name in names):
        manager = TaskManager(include_path=str(include_path))
    for name in names:
        if name not in manager.task_index:
            raise InputError(
                f"tasks: unknown lm-eval task {name!r}; local tasks and groups: {', '.join(local)}; "
                "or any lm-eval registry task"
            )
    for entry in manager.task_index.values():
        if entry.kind is not Kind.TASK or entry.yaml_path is None or include_path not in entry.yaml_path.parents:
            continue
        config = load_yaml(entry.yaml_path, resolve_func=True)
        dataset_kwargs = dict(config.get("dataset_kwargs") or {})
        if "data_files" in dataset_kwargs:
            dataset_kwargs["data_files"] = _absolute_data_files(dataset_kwargs["data_files"], entry.yaml_path.parent)
            config["dataset_kwargs"] = dataset_kwargs
        entry.cfg, entry.yaml_path = config, None
    return manager


def precheck(manager: Any, name: str, metric: str | None, filter_name: str | None) -> None:
    """Before any model runs: a task whose YAML lists its metrics and filters must have the pair asked
    for (groups, and tasks defined in Python, are checked on lm-eval's results)."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = manager.task_index[name]
    if entry.kind is not Kind.TASK or (metric is None and filter_name is None):
        return
    config = entry.cfg if entry.cfg is not None else load_yaml(entry.yaml_path, resolve_func=False)
    metrics = [m["metric"] for m in config.get("metric_list") or [] if isinstance(m.get("metric"), str)]
    if not metrics:
        return
    filters = [f["name"] for f in config.get("filter_list") or []] or ["none"]
    _pick(name, "task", [(m, f) for m in metrics for f in filters], metric, filter_name)


def metric_filter_pairs(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The (metric, filter) pairs of one task's or group's lm-eval result, in lm-eval's order."""
    pairs = []
    for key in result:
        metric, _, filter_name = key.partition(",")
        if filter_name and not metric.endswith("_stderr"):
            pairs.append((metric, filter_name))
    return pairs


def _describe(pairs: list[tuple[str, str]]) -> str:
    metrics = dict.fromkeys(m for m, _ in pairs)
    return "; ".join(f"metric {m} with filter {', '.join(f for n, f in pairs if n == m)}" for m in metrics) or "none"


def _pick(name: str, kind: str, pairs: list[tuple[str, str]], metric: str | None, filter_name: str | None):
    chosen = [(m, f) for m, f in pairs if metric in (None, m) and filter_name in (None, f)]
    if not chosen:
        asked = " with ".join(
            part for part in (metric and f"metric {metric!r}", filter_name and f"filter {filter_name!r}") if part
        )
        raise InputError(f"tasks: {kind} {name}: {asked} yields no samples; it has: {_describe(pairs)}")
    return chosen[0]


def _leaves(name: str, group_subtasks: dict[str, list[str]]) -> list[str]:
    return [leaf for child in group_subtasks.get(name, []) for leaf in (_leaves(child, group_subtasks) or [child])]


def resolve(name: str, metric: str | None, filter_name: str | None, results: dict[str, Any]):
    """A requested task -> ScoredTask, or a group -> ScoredGroup, from lm-eval's results."""
    group_subtasks = results.get("group_subtasks") or {}
    if name not in group_subtasks:
        picked = _pick(name, "task", metric_filter_pairs(results["results"][name]), metric, filter_name)
        return ScoredTask(name, *picked)
    leaves = _leaves(name, group_subtasks)
    pairs = metric_filter_pairs(results["results"].get(name, {}))
    if not pairs:
        raise InputError(
            f"tasks: group {name} cannot be aggregated (lm-eval gives it no aggregate metric: no "
            f"aggregate_metric_list, or none its tasks have); its tasks: {', '.join(leaves)}; list them instead"
        )
    group_pair = _pick(name, "group", pairs, metric, filter_name)
    tasks = []
    for leaf in leaves:
        own = metric_filter_pairs(results["results"][leaf])
        tasks.append(ScoredTask(leaf, *(group_pair if group_pair in own else own[0]), group=name))
    return ScoredGroup(name, *group_pair, tasks=tuple(tasks))


def correct(sample: dict[str, Any], task: ScoredTask) -> bool:
    value = sample.get(task.metric)
    if value is None or float(value) not in (0.0, 1.0):
        raise InputError(
            f"tasks: task {task.name}: metric {task.metric!r} is not a per-sample correct/wrong (0/1) score "
            f"({value!r}); flips need one such as acc or exact_match"
        )
    return float(value) == 1.0


def scored_samples(task: ScoredTask, samples: list[dict[str, Any]], pairs: list[tuple[str, str]]) -> list[dict]:
    """lm-eval's logged samples under the task's filter, by document; none is an InputError listing what it has."""
    logged = sorted((s for s in samples if s.get("filter", "none") == task.filter), key=lambda s: s["doc_id"])
    if not logged:
        raise InputError(
            f"tasks: task {task.name}: filter {task.filter!r} yields no samples; it has: {_describe(pairs)}"
        )
    return logged


def scored_rows(task: ScoredTask, logged: list[dict[str, Any]]) -> list[dict]:
    """One row per sample of `scored_samples`, in its order."""
    return [
        {
            "task": task.name,
            "group": task.group,
            "metric": task.metric,
            "filter": task.filter,
            "doc_id": s["doc_id"],
            "correct": correct(s, task),
            "target": str(s["target"]),
            "response": s["filtered_resps"][0] if s["filtered_resps"] else None,
        }
        for s in logged
    ]
