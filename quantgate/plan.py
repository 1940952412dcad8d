"""Plan file (YAML): what a nightly makes, measures and gates, typed and versioned.

    version: 1
    name: kimi-k2-tiny-nightly           # one MLflow experiment per plan name
    model: ../models/kimi-k2-tiny        # the BF16 baseline; relative to this file, or ORG/NAME[@REV]
    variants:
      - {name: w4a16-g128, scheme: w4a16-g128, method: rtn, group: int4}
      - {name: w2a16-g32, scheme: w2a16-g32, method: rtn, group: stress, canary: true}
      - name: vendor                     # a deployed endpoint instead of a checkpoint (no scheme/method);
        group: int4                      # its results folder is the served model name
        endpoint: {base_url: 'https://api.example.com', model: org/kimi-k2, api_key_env: VENDOR_KEY}
      - name: llmc-w4a16                 # a checkpoint made elsewhere (llm-compressor, a release, ...):
        group: int4                      # a folder relative to this file, or a Hugging Face ORG/NAME[@REV]
        path: ../elsewhere/kimi-k2-tiny-W4A16
    suites: [perplexity, latency]
    gates:
      - metric: perplexity.perplexity    # <suite>.<metric>, as measured or from the comparison
        groups: [int4]                   # default: every group
        min_recovery: 95                 # percent; direction from the Metric
      - metric: perplexity.kl_mean
        max_value: 0.05
      - metric: benchmark.accuracy
        no_significant_regression: {p_value: benchmark.mcnemar_p, alpha: 0.05}
      - metric: perplexity.kl_mean       # against the same variant in the previous passing nightly
        history: {alpha: 0.05}           # (quantgate/gates/history.py)

A canary is a variant that must fail at least one gate: if all its gates pass, the harness has
lost the sensitivity to catch it and the nightly fails.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from harness.suites.paths import suite_entry_name
from quantgate.core.errors import InputError
from quantgate.core.paths import PathName, component_problem
from quantgate.core.reference import resolve_reference
from quantgate.core.strict import StrictModel
from quantgate.core.typed_yaml import load_typed_yaml
from quantgate.plan_runtime import PlanInProcess, PlanServe

THRESHOLD_KINDS = (
    "min_recovery", "max_difference", "max_value", "min_value", "no_significant_regression", "history",
)


class PlanEndpoint(StrictModel):
    """A deployed model measured through the `openai` backend (harness.backends.openai.Endpoint)."""

    base_url: str = Field(min_length=1)  # without /v1
    model: str = Field(min_length=1)  # served model name
    api_key_env: str | None = None  # environment variable holding the API key
    tokenizer: Path | None = None  # its tokenizer folder, relative to the plan; default: the plan's model


class PlanVariant(StrictModel):
    name: PathName
    scheme: str | None = None  # a registered scheme name (quant/schemes.py); not for an endpoint
    method: Literal["rtn", "gptq"] | None = None
    endpoint: PlanEndpoint | None = None  # instead of a checkpoint made by the nightly
    path: str | None = None  # an existing checkpoint made elsewhere: a folder or a Hugging Face reference
    calibration: str | None = None  # calibration set, for methods that use one
    group: str = Field(min_length=1)
    canary: bool = False
    # folder name of its checkpoint, which is what result folders are named after;
    # default: quant's default output name, "<model folder>-<scheme>-<method>"
    checkpoint: PathName | None = None

    @model_validator(mode="after")
    def _checkpoint_or_endpoint(self) -> PlanVariant:
        made_elsewhere = self.endpoint is not None or self.path is not None
        if self.endpoint is not None and self.path is not None:
            raise ValueError(f"variant {self.name!r}: give an 'endpoint' or a 'path', not both")
        if not made_elsewhere and (self.scheme is None or self.method is None):
            raise ValueError(f"variant {self.name!r}: give 'scheme' and 'method', a 'path', or an 'endpoint'")
        if made_elsewhere and (self.scheme is not None or self.method is not None):
            kind = "an endpoint" if self.endpoint is not None else "a path"
            raise ValueError(f"variant {self.name!r}: {kind} variant takes no 'scheme' or 'method'")
        return self

    @property
    def builds(self) -> bool:
        """Whether the nightly makes this variant's checkpoint (scheme + method)."""
        return self.endpoint is None and self.path is None

    @property
    def origin(self) -> str:
        """Where the checkpoint comes from, as the report says it."""
        if self.endpoint is not None:
            return f"endpoint {self.endpoint.base_url} ({self.endpoint.model})"
        if self.path is not None:
            return f"made elsewhere: {self.path}"
        return f"built by quantgate: {self.scheme}, {self.method}"

    @model_validator(mode="after")
    def _data_free_methods_take_no_calibration(self) -> PlanVariant:
        if self.method == "rtn" and self.calibration is not None:
            raise ValueError(f"variant {self.name!r}: method 'rtn' is data-free; remove 'calibration'")
        return self


class SignificanceThreshold(StrictModel):
    """A regression counts only when it is significant: p < alpha, or an interval of the difference
    (variant - baseline) that lies wholly on the worse side of zero."""

    alpha: float = Field(default=0.05, gt=0, lt=1)
    p_value: str | None = None  # "<suite>.<metric>" holding a p-value (e.g. McNemar's)
    interval: tuple[str, str] | None = None  # ("<suite>.<low>", "<suite>.<high>") of the difference

    @model_validator(mode="after")
    def _one_source(self) -> SignificanceThreshold:
        if (self.p_value is None) == (self.interval is None):
            raise ValueError("give exactly one of 'p_value' and 'interval'")
        return self


class HistoryThreshold(StrictModel):
    """The same variant's metric against the previous passing nightly of the plan: a regression fails
    when it is significant (one-sided, at `alpha`) and larger than `max_regression` (metric units); an
    unchanged identity (checkpoint, suite, backend, quantgate version) must give the identical value."""

    alpha: float = Field(default=0.05, gt=0, lt=1)
    max_regression: float = Field(default=0.0, ge=0, allow_inf_nan=False)


class Gate(StrictModel):
    metric: str  # "<suite>.<metric>"
    groups: list[str] | None = None  # None: every group
    min_recovery: float | None = Field(default=None, allow_inf_nan=False)  # percent
    # largest allowed regression, metric units
    max_difference: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_value: float | None = Field(default=None, allow_inf_nan=False)
    min_value: float | None = Field(default=None, allow_inf_nan=False)
    no_significant_regression: SignificanceThreshold | None = None
    history: HistoryThreshold | None = None

    @model_validator(mode="after")
    def _has_threshold(self) -> Gate:
        if "." not in self.metric:
            raise ValueError(f"gate metric {self.metric!r}: write it as '<suite>.<metric>'")
        if not self.thresholds():
            raise ValueError(
                f"gate on {self.metric!r} has no threshold; give one of {', '.join(THRESHOLD_KINDS)}"
            )
        return self

    @property
    def suite(self) -> str:
        return self.metric.split(".", 1)[0]

    @property
    def metric_name(self) -> str:
        return self.metric.split(".", 1)[1]

    def thresholds(self) -> list[tuple[str, float | SignificanceThreshold | HistoryThreshold]]:
        return [(kind, getattr(self, kind)) for kind in THRESHOLD_KINDS if getattr(self, kind) is not None]


class Plan(StrictModel):
    version: Literal[1]
    name: PathName  # names the state and report folders
    model: Path
    variants: list[PlanVariant] = Field(min_length=1)
    suites: list[str] = Field(min_length=1)
    gates: list[Gate] = Field(min_length=1)
    in_process: PlanInProcess = PlanInProcess()  # how checkpoints are measured in this process
    serve: PlanServe | None = None  # else: every checkpoint served by this engine (quantgate.plan_runtime)

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        names = [v.name for v in self.variants]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"variant names repeat: {', '.join(duplicates)}")
        folders: dict[str, str] = {self.model.name: "the baseline"}
        for index, variant in enumerate(self.variants):
            folder = self.checkpoint_name(variant)
            if (reason := component_problem(folder)) is not None:
                field = "checkpoint" if variant.checkpoint or variant.endpoint is None else "endpoint.model"
                raise ValueError(f"variants.{index}.{field}: its folder name {folder!r} {reason}")
            if folder in folders:
                raise ValueError(
                    f"variants.{index}: {variant.name!r} and {folders[folder]} share the checkpoint folder "
                    f"{folder!r}; give one of them its own 'checkpoint'"
                )
            folders[folder] = repr(variant.name)
        suites = self.suite_names
        if duplicates := sorted({n for n in suites if suites.count(n) > 1}):
            raise ValueError(f"suites: {', '.join(duplicates)} listed twice")
        groups = sorted({v.group for v in self.variants})
        for gate in self.gates:
            if gate.suite not in self.suite_names:
                raise ValueError(
                    f"gate on {gate.metric!r}: suite {gate.suite!r} is not in suites {self.suite_names}"
                )
            for group in gate.groups or []:
                if group not in groups:
                    raise ValueError(f"gate on {gate.metric!r}: unknown group {group!r}; groups: {groups}")
        return self

    @property
    def suite_names(self) -> list[str]:
        """The suites' names: a bare name as it is; a path (a suite file elsewhere) by its file stem."""
        return [suite_entry_name(s) for s in self.suites]

    @property
    def baseline_name(self) -> str:
        return self.model.name

    def variant(self, name: str) -> PlanVariant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise InputError(
            f"unknown variant {name!r}; the plan's variants: {', '.join(v.name for v in self.variants)}"
        )

    def checkpoint_name(self, variant: PlanVariant) -> str:
        """Its results folder's name; an endpoint's is its served model name (as `quantgate eval` names it)."""
        if variant.endpoint is not None:
            return variant.checkpoint or variant.endpoint.model.replace("/", "_")
        if variant.path is not None:
            return variant.checkpoint or variant.name
        return variant.checkpoint or f"{self.model.name}-{variant.scheme}-{variant.method}"

    def gates_for(self, variant: PlanVariant) -> list[Gate]:
        return [g for g in self.gates if g.groups is None or variant.group in g.groups]

    def digest(self) -> str:
        """sha256 of the plan as resolved (canonical JSON); names the plan's version in MLflow."""
        resolved = self.model_dump(mode="json") | {"model": self.model.name}  # the same on every machine
        if self.serve is None:  # plans that say nothing of how they are measured keep their digest
            del resolved["serve"]
        else:
            del resolved["serve"]["python"]  # where the engine lives, not what it runs
            if resolved["serve"]["toolcall_mode"] == "chat":  # the default: digests from before the option
                del resolved["serve"]["toolcall_mode"]
        if self.in_process == PlanInProcess():
            del resolved["in_process"]
        for variant in resolved["variants"]:
            if variant.get("path") is not None:
                variant["path"] = Path(variant["path"]).name
        canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def load_plan(path: Path, locate: bool = False) -> Plan:
    """The plan, paths resolved against its folder. `locate` (the nightly, which measures): the model
    and every `path:` variant must be checkpoints, found on disk or as Hugging Face references; else
    (gate, report: results only) they are taken as written."""
    plan = load_typed_yaml(path, Plan)
    model = (path.parent / plan.model).resolve()
    if locate and not model.exists():  # not a folder beside the plan: a Hugging Face reference
        model = _made_elsewhere(path, "model", str(plan.model), require_weights=False)
    variants = [
        v.model_copy(update={"endpoint": v.endpoint.model_copy(update={
            "tokenizer": (path.parent / v.endpoint.tokenizer).resolve() if v.endpoint.tokenizer else model
        })}) if v.endpoint else v
        for v in plan.variants
    ]
    if locate:
        variants = [
            v.model_copy(update={"path": str(_made_elsewhere(path, f"variants.{i}.path", v.path))})
            if v.path is not None
            else v
            for i, v in enumerate(variants)
        ]
    serve = plan.serve
    if serve is not None and not serve.python.is_absolute() and "/" in str(serve.python):
        serve = serve.model_copy(update={"python": (path.parent / serve.python).resolve()})
    return plan.model_copy(update={"model": model, "variants": variants, "serve": serve})


def _made_elsewhere(plan_path: Path, field: str, reference: str, require_weights: bool = True) -> Path:
    """The checkpoint folder a plan field names: relative to the plan file, else a Hugging Face reference."""
    where = f"{plan_path}: {field}"
    local = plan_path.parent / reference
    try:
        folder = resolve_reference(local if local.exists() else reference, where)
    except InputError as error:
        reason = str(error).removeprefix(f"{where} ")
        if not local.exists():
            reason = f"no such folder {local.resolve()}; as a Hugging Face reference, {reason}"
        raise InputError(f"{where}: {reason}") from None
    if require_weights and not any(folder.glob("*.safetensors")):
        raise InputError(f"{where}: {reference}: not a checkpoint (no *.safetensors in {folder})")
    return folder.resolve()


