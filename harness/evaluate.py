"""`quantgate eval`: measure models on suites, and each against the baseline on the same inputs.

Order: every suite file is loaded and validated before any model; the baseline is loaded only if a
suite's baseline measurement is not cached yet, then freed; each model is then loaded once (one
backend shared by all suites), measured on every suite and freed before the next, so that peak
memory belongs to one model. Results: RESULTS/<model folder name>/<suite name>/.

A model or the baseline can be an endpoint (`Endpoint`: base URL, served model name, API key's env
var, tokenizer folder) measured through the `openai` backend; its results folder is named after the
served model name, and its requests are journalled under RESULTS/.requests/<name>.jsonl so that a
rerun after a failure repeats only the requests that got no response.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import result_folder
from harness.backends.base import Backend
from harness.backends.openai import Endpoint
from harness.backends.registry import BackendOptions, numerical_settings, open_backend
from harness.cache import BaselineCache, cache_key, cpu_name
from harness.suites.base import Measurement, SuiteConfig, suite_kind
from harness.suites.loader import load_suite
from quantgate.core.checkpoint import check_safetensors_weights, checkpoint_identity
from quantgate.core.errors import InputError
from quantgate.core.paths import path_component
from quantgate.core.record import ModelRef

DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class EvalRequest:
    models: list[Path]
    suites: list[str | SuiteConfig]  # a suite's name or file, or a config built in code (`eval --tasks`)
    out: Path
    cache_dir: Path
    baseline: Path | None = None
    threads: int | None = None
    batch_size: int | None = None  # overrides every suite's batch_size
    device: str = "cpu"
    dtype: str = "float32"
    device_map: str | None = None  # hf: "auto" spreads each model over every visible GPU (accelerate)
    lm_eval_model: str | None = None  # overrides benchmark suites' lm_eval_model ("vllm": lm-eval's own, GPU)
    endpoints: list[Endpoint] = field(default_factory=list)  # models served elsewhere (backend openai)
    baseline_endpoint: Endpoint | None = None  # instead of `baseline`
    concurrency: int = 8  # openai: requests in flight
    max_top_k: int = 64  # openai: log-probabilities per token the server returns
    toolcall_mode: str = "chat"  # openai: chat (server-side tool-call parsing) or raw (harness parser)
    write_baseline: bool = True  # False: the baseline is measured (or read from cache) but gets no result folders
    verify: bool = False  # hash every file of checkpoints without a manifest in full (else the file-hash cache)
    model_names: list[str] | None = None  # result folder names, one per model (default: each folder's name)


@dataclass
class Checkpoint:
    path: Path  # the checkpoint, or for an endpoint its tokenizer folder
    identity: str
    role: str  # "baseline" or "variant" (measured against the baseline) or "model" (no baseline given)
    backend: Backend | None = None
    timings: dict = field(default_factory=dict)
    endpoint: Endpoint | None = None
    name: str | None = None  # its results folder name, when not the folder's own

    @property
    def label(self) -> str:
        if self.endpoint:
            return self.endpoint.model.replace("/", "_")
        return self.name or self.path.name

    @property
    def backend_name(self) -> str:
        return "openai" if self.endpoint else "hf"

    def ref(self, cache_key: str | None = None) -> ModelRef:
        named = {"name": self.name} if self.name else {}
        if self.endpoint:
            named = {"name": self.label, "base_url": self.endpoint.base_url, "served_model": self.endpoint.model}
        return ModelRef(path=str(self.path), identity=self.identity, role=self.role, cache_key=cache_key, **named)


def _suites(request: EvalRequest) -> list[SuiteConfig]:
    configs = [load_suite(s) if isinstance(s, str | Path) else s for s in request.suites]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise InputError(f"--suite: two suites share a name ({', '.join(names)})")
    overrides = {"batch_size": request.batch_size, "lm_eval_model": request.lm_eval_model}
    for name, value in overrides.items():  # over every suite that has the field
        if value is not None:
            configs = [c.model_copy(update={name: value}) if name in type(c).model_fields else c for c in configs]
    return configs


def _checkpoint(path: Path, role: str, verify: bool = False, name: str | None = None) -> Checkpoint:
    path = path.resolve()
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: not a checkpoint directory (no config.json)")
    check_safetensors_weights(path)  # shard names inside the folder, no pickles: before anything is loaded
    return Checkpoint(path, checkpoint_identity(path, verify=verify), role, name=name)


def _endpoint_checkpoint(endpoint: Endpoint, role: str) -> Checkpoint:
    if not (endpoint.tokenizer / "tokenizer_config.json").is_file():
        raise InputError(f"{endpoint.tokenizer}: no tokenizer_config.json (the endpoint's tokenizer folder)")
    return Checkpoint(endpoint.tokenizer.resolve(), endpoint.identity(), role, endpoint=endpoint)


def _options(request: EvalRequest, checkpoint: Checkpoint | None = None, batch: int = 0) -> BackendOptions:
    journal = request.out / ".requests" / f"{checkpoint.label}.jsonl" if checkpoint else None
    return BackendOptions(
        dtype=request.dtype, device=request.device, device_map=request.device_map, threads=request.threads,
        batch_size=batch or DEFAULT_BATCH_SIZE,
        concurrency=request.concurrency, max_top_k=request.max_top_k, toolcall_mode=request.toolcall_mode,
        journal=journal,
    )


def _load(checkpoint: Checkpoint, request: EvalRequest, suites: list[SuiteConfig]) -> Backend:
    if checkpoint.backend is None:
        batch = request.batch_size or max((getattr(s, "batch_size", 0) for s in suites), default=0)
        start = time.perf_counter()
        checkpoint.backend = open_backend(
            checkpoint.backend_name, checkpoint.endpoint or checkpoint.path, _options(request, checkpoint, batch)
        )
        checkpoint.timings["load_s"] = time.perf_counter() - start
    return checkpoint.backend


def _release(checkpoint: Checkpoint) -> None:
    checkpoint.backend = None
    gc.collect()


def backend_settings(request: EvalRequest, backend_name: str = "hf") -> dict:
    """What a cache key needs before any model is loaded (the same fields the backend's describe gives)."""
    return numerical_settings(backend_name, _options(request))


def _write(
    request: EvalRequest,
    checkpoint: Checkpoint,
    config: SuiteConfig,
    measurement: Measurement,
    comparison: list | None,
    baseline: ModelRef | None,
    timings: dict,
    description: dict,
) -> Path:
    folder = request.out / checkpoint.label / config.name
    record = result_folder.result_record(
        checkpoint.ref(), config.model_dump(mode="json"), measurement, comparison, baseline
    )
    result_folder.write_result(
        folder,
        record,
        measurement.samples,
        result_folder.environment(description, cpu_name()),
        timings | {"model": checkpoint.timings},
    )
    return folder


def _measure_baseline(
    request: EvalRequest,
    baseline: Checkpoint,
    suites: list[SuiteConfig],
    on_written: Callable[[str, str, Path], None] | None,
) -> dict:
    """name -> (Measurement, cache key); measured and cached where the cache has no entry."""
    cache, settings, measured = BaselineCache(request.cache_dir), backend_settings(request, baseline.backend_name), {}
    for config in suites:
        key, inputs = cache_key(baseline.identity, config, settings)
        start, cpu_start = time.perf_counter(), time.process_time()
        measurement = cache.load(config, key)
        hit = measurement is not None
        if measurement is None:
            backend = _load(baseline, request, suites)
            kind = suite_kind(config.kind)
            measurement = cache.store(
                config, key, inputs, baseline.ref(), lambda tmp, b=backend, c=config, k=kind: k.measure(c, b, tmp)
            )
        timings = {
            "baseline_cache": "hit" if hit else "miss",
            "measure_s": time.perf_counter() - start,
            "measure_cpu_s": time.process_time() - cpu_start,  # process CPU time (all threads)
        }
        measured[config.name] = (measurement, key)
        if not request.write_baseline:
            continue
        description = (
            baseline.backend.describe() if baseline.backend else settings | {"model": str(baseline.path)}
        )
        result_folder.staging(request.out / baseline.label / config.name)
        folder = _write(
            request, baseline, config, measurement, None, None, timings | {"cache_key": key}, description
        )
        if on_written is not None:
            on_written(baseline.label, config.name, folder)
    _release(baseline)
    return measured


def evaluate(request: EvalRequest, on_written: Callable[[str, str, Path], None] | None = None) -> list[Path]:
    """Measure every model on every suite; `on_written(checkpoint label, suite, folder)` after each
    result folder is in place (the nightly moves it into its result store at once)."""
    suites = _suites(request)
    if request.baseline and request.baseline_endpoint:
        raise InputError("give the baseline as a checkpoint or as an endpoint, not both")
    baseline = _checkpoint(request.baseline, "baseline", request.verify) if request.baseline else None
    if request.baseline_endpoint:
        baseline = _endpoint_checkpoint(request.baseline_endpoint, "baseline")
    role = "variant" if baseline else "model"
    names = request.model_names or [None] * len(request.models)
    checkpoints = [
        _checkpoint(path, role, request.verify, name) for path, name in zip(request.models, names, strict=True)
    ]
    checkpoints += [_endpoint_checkpoint(endpoint, role) for endpoint in request.endpoints]
    labels = [c.label for c in checkpoints] + ([baseline.label] if baseline else [])
    for checkpoint in checkpoints + ([baseline] if baseline else []):
        if checkpoint.endpoint is not None:  # its results folder is named after the served model
            path_component(checkpoint.label, file="--served-model", field="results folder name")
    if len(set(labels)) != len(labels):
        raise InputError(f"--model/--baseline: two checkpoints or endpoints share a name ({', '.join(labels)})")
    baseline_measurements = _measure_baseline(request, baseline, suites, on_written) if baseline else {}
    written = [request.out / baseline.label / c.name for c in suites] if baseline and request.write_baseline else []
    for checkpoint in checkpoints:
        backend = _load(checkpoint, request, suites)
        for config in suites:
            kind, folder = suite_kind(config.kind), request.out / checkpoint.label / config.name
            artifacts = result_folder.staging(folder) / "artifacts"
            start, cpu_start = time.perf_counter(), time.process_time()
            comparison, baseline_entry = None, None
            if baseline is None:
                measurement = kind.measure(config, backend, artifacts)
                measured_s, measured_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
            else:
                base, key = baseline_measurements[config.name]
                if kind.measure_against is not None:
                    measurement = kind.measure_against(config, backend, artifacts, base)
                else:
                    measurement = kind.measure(config, backend, artifacts)
                measured_s = time.perf_counter() - start
                measured_cpu_s = time.process_time() - cpu_start
                comparison = kind.compare(config, measurement, base)
                baseline_entry = baseline.ref(cache_key=key)
            timings = {
                "measure_s": measured_s,
                "measure_cpu_s": measured_cpu_s,  # process CPU time (all threads): robust on a shared machine
                "compare_s": time.perf_counter() - start - measured_s,
            }
            folder = _write(
                request, checkpoint, config, measurement, comparison, baseline_entry, timings, backend.describe()
            )
            written.append(folder)
            if on_written is not None:
                on_written(checkpoint.label, config.name, folder)
        _release(checkpoint)
    return written
