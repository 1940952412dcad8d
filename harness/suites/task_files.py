"""The files a benchmark suite's local lm-eval tasks read, hashed, and whether they hold code.

Every file under the suite's `include_path` (task YAMLs, any `!function` module), a YAML they
`include` from elsewhere, and every data file a task YAML names in `dataset_kwargs.data_files`
(relative to the YAML's folder), resolved and hashed: changing an answer in a task's data changes the
cache and result keys.

lm-eval's `!function module.fn` runs Python from the task folder. A local task folder holding one is
refused unless the suite opts in (`trust_task_code: true`); lm-eval's own registry tasks are trusted
as installed.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from harness.suites.paths import suite_data_path
from quantgate.core.checkpoint import sha256_file
from quantgate.core.errors import InputError

FUNCTION_TAG = "!function"


class _TaskLoader(yaml.SafeLoader):
    """Safe YAML that records `!function` tags instead of importing them."""

    functions: list[str]


def _function(loader: _TaskLoader, node: yaml.Node) -> str:
    loader.functions.append(str(node.value))
    return f"{FUNCTION_TAG} {node.value}"


_TaskLoader.add_constructor(FUNCTION_TAG, _function)


def include_folder(include_path: str) -> Path:
    try:
        return suite_data_path(include_path).resolve()
    except FileNotFoundError:
        raise InputError(f"include_path: {include_path} not found") from None


def _read_task(path: Path) -> tuple[dict[str, Any], list[str]]:
    loader = _TaskLoader(path.read_text())
    loader.functions = []
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    finally:
        loader.dispose()
    return (data if isinstance(data, dict) else {}), loader.functions


def _data_files(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [f for item in value for f in _data_files(item)]
    if isinstance(value, dict):
        return [f for item in value.values() for f in _data_files(item)]
    return []


def task_files(include_path: str, trust_task_code: bool) -> dict[str, str]:
    """{file: sha256} of everything the local tasks read, plus lm-eval's version (registry tasks)."""
    folder = include_folder(include_path)
    hashed: dict[str, str] = {"lm_eval": version("lm_eval")}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        hashed[str(path)] = sha256_file(path)
        if path.suffix not in (".yaml", ".yml"):
            continue
        task, functions = _read_task(path)
        if functions and not trust_task_code:
            raise InputError(
                f"trust_task_code: {path} runs task code ({FUNCTION_TAG} {functions[0]}); set "
                "trust_task_code: true in the suite to allow it"
            )
        for name in _data_files(task.get("include")):  # lm-eval's `include: other.yaml`, maybe elsewhere
            included = path.parent / name
            if included.is_file():
                hashed[str(included.resolve())] = sha256_file(included)
        dataset_kwargs = task.get("dataset_kwargs")
        for name in _data_files(dataset_kwargs.get("data_files") if isinstance(dataset_kwargs, dict) else None):
            data = name if Path(name).is_absolute() else str((path.parent / name).resolve())
            if not Path(data).is_file():
                raise InputError(f"include_path: {path}: dataset_kwargs.data_files: {name} not found ({data})")
            hashed[data] = sha256_file(Path(data))
    return hashed
