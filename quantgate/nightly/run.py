"""`quantgate nightly`: build the plan's variants, evaluate the baseline once and every variant on
every suite, gate, write the report, and record everything in MLflow.

Order and what survives a crash:
1. every input is checked before any work (plan, suites, schemes);
2. variants are built into `state/variants/` (reused when finished and unchanged);
3. each (checkpoint, suite) pair not already in the result store is measured; each finished pair
   is moved into the store at once (nightly/store.py), so a killed nightly loses at most the pairs
   in flight and a rerun measures only what is missing;
4. the result records are gated, the report is written under `reports/<plan>/<nightly id>/`, and
   the nightly (records, verdict, report) is logged to MLflow once (idempotently, so a rerun makes
   no duplicate runs), or kept in the outbox when the tracking server cannot be reached (`quantgate
   sync` uploads it later). History in the report comes from earlier nightlies only.
With `--shard i/n` only that slice of the matrix is measured and logged; `quantgate report
--nightly ID` gates and reports the whole once every shard has logged.
"""

from __future__ import annotations

import gc
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from harness.backends.openai import Endpoint
from harness.evaluate import EvalRequest, backend_settings, evaluate
from harness.suites.base import SuiteConfig
from harness.suites.loader import load_suite
from harness.suites.paths import is_suite_file, suite_entry_name
from quantgate.core.checkpoint import checkpoint_identity
from quantgate.core.errors import InputError
from quantgate.core.record import ResultRecord, read_record
from quantgate.gates.evaluate import GateReport
from quantgate.nightly.build import build_variant, check_schemes
from quantgate.nightly.matrix import Pair, Shard, matrix, shard_of
from quantgate.nightly.preflight import check_machine, dry_run
from quantgate.nightly.progress import Progress
from quantgate.nightly.serving import MeasurementIncomplete, ServedCheckpoint, ServerFailure, served_identity
from quantgate.nightly.store import ResultStore, pair_key
from quantgate.plan import Plan, PlanEndpoint, load_plan
from quantgate.plan_runtime import PlanInProcess
from quantgate.tracking.nightly_record import default_nightly_id

IN_PROCESS_KINDS = ("latency",)  # suites that need the model in this process (not an endpoint)


@dataclass(frozen=True)
class NightlyRequest:
    plan_path: Path
    shard: Shard
    state: Path  # state dir: variants, results, outbox, embedded MLflow
    reports: Path  # reports root: <reports>/<plan>/<nightly id>/
    cache_dir: Path  # baseline cache
    tracking_uri: str | None = None
    nightly_id: str | None = None
    threads: int | None = None
    workers: int = 1  # quantize workers
    in_process: dict | None = None  # --device/--dtype/--device-map: over the plan's `in_process`
    dry_run: bool = False  # print the servers it would start and the pairs; run nothing


@dataclass(frozen=True)
class NightlyOutcome:
    nightly_id: str
    results: list[ResultRecord]
    gates: GateReport | None  # None for a shard of a split nightly
    report_dir: Path | None
    tracking_message: str
    measured: int  # pairs measured now (the rest were reused)


def suite_ref(plan_path: Path, suite: str) -> str:
    """A plan's suite entry for load_suite: a bare name, or a path made relative to the plan file."""
    if is_suite_file(suite):
        return str((plan_path.parent / suite).resolve())
    return suite


def _checkpoint_paths(plan: Plan, pairs: list[Pair], request: NightlyRequest, progress: Progress) -> dict[str, Path]:
    paths = {plan.baseline_name: plan.model}
    for variant in dict.fromkeys(p.variant for p in pairs if p.variant is not None and p.variant.path is not None):
        paths[plan.checkpoint_name(variant)] = Path(variant.path)  # checked by load_plan
        progress.note(f"variant {variant.name}: {variant.origin}")
    for variant in dict.fromkeys(p.variant for p in pairs if p.variant is not None and p.variant.builds):
        start = time.perf_counter()
        path, reused = build_variant(plan, variant, request.state / "variants", request.workers)
        paths[plan.checkpoint_name(variant)] = path
        how = "reused" if reused else f"built in {time.perf_counter() - start:.1f}s"
        progress.step(f"quantize {variant.name} ({variant.scheme}, {variant.method}): {how}")
    return paths


def _measure(
    plan: Plan,
    configs: dict[str, SuiteConfig],
    pairs: list[Pair],
    paths: dict[str, Path],
    request: NightlyRequest,
    nightly_id: str,
    progress: Progress,
) -> tuple[dict[Pair, Path], int]:
    """The result folder of every pair, measuring those the store does not hold yet. In serve mode a
    checkpoint whose server fails is reported and skipped (MeasurementIncomplete at the end)."""
    store = ResultStore(request.state / "results")
    runtime = _runtime(plan, request)
    settings_request = EvalRequest(
        [], [], request.state, request.cache_dir, threads=request.threads, device=runtime.device, dtype=runtime.dtype
    )
    served = plan.serve
    baseline_identity = checkpoint_identity(plan.model)
    if served is not None:
        baseline_identity = served_identity(served, baseline_identity)
    folders: dict[Pair, Path] = {}
    measured, failures = 0, []
    for checkpoint in dict.fromkeys(p.checkpoint for p in pairs):
        mine = [p for p in pairs if p.checkpoint == checkpoint]
        endpoint = mine[0].variant.endpoint if mine[0].variant is not None else None
        is_baseline = checkpoint == plan.baseline_name
        if endpoint is not None:
            # a deployment can change behind its URL: measured once per nightly (resumable within it)
            identity = f"endpoint:{endpoint.base_url}:{endpoint.model}:{nightly_id}"
            settings = backend_settings(settings_request, "openai")
        elif served is not None:
            own = served_identity(served, checkpoint_identity(paths[checkpoint])) if not is_baseline else None
            identity = own or baseline_identity
            settings = backend_settings(settings_request, "openai")
        else:
            identity = baseline_identity if is_baseline else checkpoint_identity(paths[checkpoint])
            settings = backend_settings(settings_request)
        for pair in mine:
            key = pair_key(identity, baseline_identity, configs[pair.suite], settings)
            folders[pair] = store.folder(checkpoint, suite_entry_name(pair.suite), key)  # never the path
        todo = [p for p in mine if not store.finished(folders[p])]
        for pair in mine:
            if pair not in todo:
                progress.step(f"eval {pair.label}: reused")
        if not todo:
            continue
        scratch = store.scratch()
        started = time.perf_counter()
        servers: list[ServedCheckpoint] = []  # this checkpoint's server, in serve mode

        def adopt(
            label: str, suite: str, written: Path, todo: list[Pair] = todo, servers: list = servers
        ) -> None:
            nonlocal started, measured
            pair = next(p for p in todo if p.checkpoint == label and configs[p.suite].name == suite)
            for server in servers:
                server.keep_log(written)
            store.adopt(written, folders[pair])
            measured += 1
            progress.step(f"eval {pair.label}: measured in {time.perf_counter() - started:.1f}s")
            started = time.perf_counter()

        evaluation = dict(
            suites=[suite_ref(request.plan_path, p.suite) for p in todo],
            out=scratch,
            cache_dir=request.cache_dir,
            threads=request.threads,
            device=runtime.device,
            dtype=runtime.dtype,
            device_map=runtime.device_map,
            lm_eval_model=runtime.lm_eval_model if runtime.lm_eval_model != "hf" else None,  # else the suites' own
            write_baseline=is_baseline,  # a variant's run reads the baseline from cache, writes nothing of it
        )
        try:
            if served is not None and endpoint is None:
                server = ServedCheckpoint(
                    served, paths[checkpoint], checkpoint, request.state / "servers" / checkpoint, identity
                )
                servers.append(server)
                with server as served_endpoint:
                    progress.note(f"server {checkpoint}: {served.engine} at {served_endpoint.base_url} "
                                  f"(pid {server.server.process.pid}, log {server.log})")  # fmt: skip
                    # the baseline's server is down while variants run: they read its measurements from cache
                    baseline = served_endpoint if is_baseline else Endpoint(
                        "http://baseline-served-earlier", plan.baseline_name, plan.model,
                        served_identity=baseline_identity,
                    )  # fmt: skip
                    by_server = EvalRequest(
                        models=[], endpoints=[] if is_baseline else [served_endpoint], baseline_endpoint=baseline,
                        concurrency=served.concurrency, max_top_k=served.max_logprobs,
                        toolcall_mode=served.toolcall_mode, **evaluation,
                    )  # fmt: skip
                    evaluate(by_server, on_written=adopt)
            else:
                evaluate(
                    EvalRequest(
                        models=[] if is_baseline or endpoint is not None else [paths[checkpoint]],
                        model_names=None if is_baseline or endpoint is not None else [checkpoint],
                        endpoints=[] if endpoint is None else [_endpoint(plan, endpoint, request.plan_path)],
                        baseline=plan.model,
                        **evaluation,
                    ),
                    on_written=adopt,
                )
        except ServerFailure as failure:
            failures.append(str(failure))
            progress.note(f"FAILED {str(failure).splitlines()[0]}")  # the log's tail comes in the summary
        finally:  # a failed run leaves no scratch (a killed one's is removed by the next nightly)
            shutil.rmtree(scratch, ignore_errors=True)  # empty unless a suite left files outside its folder
        gc.collect()
    if failures:
        raise MeasurementIncomplete(failures)
    return folders, measured


def _runtime(plan: Plan, request: NightlyRequest) -> PlanInProcess:
    """The plan's in-process settings with the command line's over them."""
    if not request.in_process:
        return plan.in_process
    try:
        return PlanInProcess.model_validate(plan.in_process.model_dump() | request.in_process)
    except ValidationError as error:
        problem = error.errors()[0]
        raise InputError(f"--{str(problem['loc'][0]).replace('_', '-')}: {problem['msg']}") from None


def _endpoint(plan: Plan, endpoint: PlanEndpoint, plan_path: Path) -> Endpoint:
    tokenizer = (plan_path.parent / endpoint.tokenizer).resolve() if endpoint.tokenizer else plan.model
    return Endpoint(endpoint.base_url, endpoint.model, tokenizer, endpoint.api_key_env)


def _measured_by_endpoint(plan: Plan, pair: Pair) -> bool:
    return plan.serve is not None or (pair.variant is not None and pair.variant.endpoint is not None)


def _planned_paths(plan: Plan, pairs: list[Pair], request: NightlyRequest) -> dict[str, Path]:
    """Where each checkpoint is or will be (a variant the nightly builds: under state/variants/)."""
    paths = {plan.baseline_name: plan.model}
    for variant in {p.variant.name: p.variant for p in pairs if p.variant is not None}.values():
        if variant.path is not None:
            paths[plan.checkpoint_name(variant)] = Path(variant.path)
        elif variant.builds:
            paths[plan.checkpoint_name(variant)] = request.state / "variants" / plan.checkpoint_name(variant)
    return paths


def run_nightly(request: NightlyRequest) -> NightlyOutcome | list[str]:
    """The nightly's outcome; with `dry_run`, the lines saying what it would do (nothing is run)."""
    from quantgate.finish import finish
    from quantgate.tracking.store import resolve_store

    plan = load_plan(request.plan_path, locate=True)
    configs = {name: load_suite(suite_ref(request.plan_path, name)) for name in plan.suites}  # checked first
    try:
        check_schemes(plan)
    except InputError as error:  # named with the plan file, like every other plan error
        raise InputError(f"{request.plan_path}: {error}") from None
    runtime = _runtime(plan, request)
    nightly_id = request.nightly_id or default_nightly_id(plan)
    pairs = shard_of(matrix(plan), request.shard)
    in_process_only = [
        p for p in pairs if configs[p.suite].kind in IN_PROCESS_KINDS and _measured_by_endpoint(plan, p)
    ]
    pairs = [p for p in pairs if p not in in_process_only]
    if request.dry_run:
        return dry_run(plan, pairs, _planned_paths(plan, pairs, request), runtime)
    if any(getattr(c, "lm_eval_model", None) == "vllm" for c in configs.values()):
        runtime = runtime.model_copy(update={"lm_eval_model": "vllm"})  # a suite asks for it: a GPU is needed
    check_machine(plan, request.plan_path, runtime)  # before anything is built
    builds = len({p.variant.name for p in pairs if p.variant is not None and p.variant.builds})
    progress = Progress(builds + len(pairs) + (2 if request.shard.whole else 1))
    progress.note(
        f"nightly {nightly_id}: plan {plan.name}, shard {request.shard}, {len(pairs)} (checkpoint, suite) pairs"
    )
    for pair in in_process_only:
        progress.note(f"skip {pair.label}: an endpoint cannot be measured by an in-process suite")
    if plan.serve is not None:
        progress.note(
            f"serve mode: every checkpoint served by {plan.serve.engine} in turn, the baseline first (its KL "
            f"distributions are the engine's top-{plan.serve.max_logprobs} log-probabilities)"
        )
    try:
        paths = _checkpoint_paths(plan, pairs, request, progress)
        folders, measured = _measure(plan, configs, pairs, paths, request, nightly_id, progress)
        results = [read_record(folders[p]) for p in pairs]
        finished = finish(
            plan, results, nightly_id, gate=request.shard.whole, store=resolve_store(request.tracking_uri),
            reports=request.reports, state=request.state,
        )  # fmt: skip
        if finished.report_dir is not None:
            progress.step(f"report: {finished.report_dir / 'report.html'}")
        progress.step(finished.delivery.message)
    finally:
        progress.close()
    return NightlyOutcome(
        nightly_id, results, finished.gates, finished.report_dir, finished.delivery.message, measured
    )
