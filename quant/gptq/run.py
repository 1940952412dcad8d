"""`quantgate quantize --method gptq`: sequential, layer-by-layer GPTQ over the safetensors shards.

Per decoder layer: read its tensors (only this layer is in memory, plus the calibration hidden
states [S, L, H]), run it on the calibration rows collecting each quantized Linear's Hessian
(routed experts: from exactly the rows the router sends them), quantize every module (GPTQ or
the RTN fallback), put the dequantized weights back and run the layer again: its output, from
quantized weights, is the next layer's input. Packed tensors are written per layer into the
scratch directory and assembled into the output shards at the end (quant/gptq/writer.py).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from compressed_tensors.quantization import ActivationOrdering, QuantizationStrategy, QuantizationType
from safetensors.torch import save_file

from quant.build import Outcome, resolve_scheme
from quant.gptq.calibration import build_calibration
from quant.gptq.distributed import Ranks, close_ranks, init_ranks
from quant.gptq.gptq import GPTQ
from quant.gptq.layerwise import (
    LayerNames,
    LayerRunner,
    ShardReader,
    UnfusedExperts,
    build_layer,
    embed,
    layer_prefix,
    load_config,
)
from quant.gptq.modules import ModuleResult, compress, quantize_group
from quant.gptq.writer import LAYER_DIR, Target, prepare_target, write_checkpoint
from quant.heap import reuse_freed_memory
from quant.schemes import Scheme
from quant.select import module_of, plan_quantization
from quant.source import load_source, source_hashes
from quantgate.core.errors import InputError
from quantgate.core.gptq import FALLBACK_REASONS, CalibrationSpec, GPTQOptions, GPTQReport, LayerStats
from quantgate.core.manifest import SourceIdentity

METHOD = "gptq"
EXPERT_PREFIX = "mlp.experts."


@dataclass(frozen=True)
class GPTQRequest:
    model: Path
    scheme: Scheme
    out: Path | None = None
    output_root: Path | None = None
    options: GPTQOptions | None = None  # None: GPTQOptions.for_scheme(scheme.name)
    calibration: CalibrationSpec = CalibrationSpec()
    data_root: Path = Path(".")  # relative calibration paths resolve against this


def default_output(model: Path, scheme: Scheme, output_root: Path | None = None) -> Path:
    return (output_root or model.parent) / f"{model.name}-{scheme.name}-{METHOD}"


def gptq_scheme(scheme: Scheme, options: GPTQOptions) -> Scheme:
    """The scheme as written to config.json: int weights, group/channel; actorder recorded as llm-compressor does."""
    weights = scheme.quantization.weights
    if weights.type != QuantizationType.INT or weights.strategy not in (
        QuantizationStrategy.GROUP, QuantizationStrategy.CHANNEL
    ):  # fmt: skip
        raise InputError(
            f"scheme {scheme.name!r}: --method gptq needs int weights with group or channel strategy "
            f"(got {weights.type} {weights.strategy})"
        )
    if weights.actorder not in (None, ActivationOrdering.STATIC, ActivationOrdering.WEIGHT):
        raise InputError(f"scheme {scheme.name!r}: actorder {weights.actorder} (needs g_idx) is not supported")
    actorder = ActivationOrdering.STATIC if options.actorder == "static" else None
    new_weights = weights.model_copy(update={"actorder": actorder})
    quantization = scheme.quantization.model_copy(update={"weights": new_weights})
    return scheme.model_copy(update={"quantization": quantization})


def _layer_modules(quantized: frozenset[str], index: int, names: LayerNames) -> dict[str, str]:
    """Layer-local modules to quantize, in-memory name -> on-disk name; routed experts first."""
    prefix = layer_prefix(index)
    local = {names.in_memory(m): m for m in (module_of(n)[len(prefix) :] for n in quantized if n.startswith(prefix))}
    return {m: local[m] for m in sorted(local, key=lambda m: (not m.startswith(EXPERT_PREFIX), _natural(m)))}


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))


def _expert_of(module: str) -> int | None:
    return int(module.split(".")[2]) if module.startswith(EXPERT_PREFIX) else None


# A module that reads the same input tensor as a sibling of the same parent (transformers' forwards:
# gate_proj(x) * up_proj(x); q_a_proj / q_proj and kv_a_proj_with_mqa of hidden_states; q/k/v_proj).
SAME_INPUT = {"up_proj": ("gate_proj",), "kv_a_proj_with_mqa": ("q_a_proj", "q_proj"), "k_proj": ("q_proj",),
              "v_proj": ("q_proj",)}  # fmt: skip


def input_groups(modules: list[str]) -> dict[str, tuple[str, ...]]:
    """The layer's modules grouped by input, lead -> members (lead first), in the modules' order of leads.

    A group shares one Hessian (accumulated from the lead's input) and one GPTQ run, and is the
    unit dealt over the ranks, so grouping never depends on the number of ranks."""
    present = set(modules)
    groups: dict[str, list[str]] = {}
    for module in modules:
        parent, _, leaf = module.rpartition(".")
        leads = [f"{parent}.{lead}" for lead in SAME_INPUT.get(leaf, ()) if f"{parent}.{lead}" in present]
        groups.setdefault(leads[0] if leads else module, []).append(module)
    return {lead: (lead, *sorted(set(members) - {lead}, key=_natural)) for lead, members in groups.items()}


def _cost(layer: torch.nn.Module, members: tuple[str, ...]) -> float:
    """GPTQ's work for a group, roughly: factorizing the [I, I] Hessian and updating the stacked rows."""
    columns = layer.get_submodule(members[0]).in_features
    return float(columns**3 + sum(layer.get_submodule(m).out_features for m in members) * columns**2)


def work_units(groups: dict[str, tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The layer's groups (by lead) as the units dealt over the ranks: a routed expert's groups together (its
    down_proj's input needs its own gate_proj and up_proj as read from the checkpoint), every other group
    alone; in the groups' order."""
    units: dict[object, list[str]] = {}
    for lead in groups:
        expert = _expert_of(lead)
        units.setdefault(lead if expert is None else expert, []).append(lead)
    return [tuple(unit) for unit in units.values()]


@dataclass(frozen=True)
class Quantized:
    """One module's result as the ranks share it: its packed tensors (rank 0 writes them), its weight as
    transformers will decode it (the source dtype) and its figures for the report."""

    packed: dict[str, torch.Tensor] | None
    decoded: torch.Tensor | None
    loss: float
    fallback: str | None
    dampening: float
    change: float  # sum of (dequantized - source weight)^2
    norm: float  # sum of source weight^2


def _finish(result: ModuleResult, weight: torch.Tensor, compressed_scheme) -> Quantized:
    return Quantized(
        packed=compress(result, compressed_scheme), decoded=result.dequantized.to(weight.dtype), loss=result.loss,
        fallback=result.fallback, dampening=result.dampening,
        change=float((result.dequantized - weight.float()).square().sum()), norm=float(weight.float().square().sum()),
    )  # fmt: skip


def _experts(layer: torch.nn.Module) -> UnfusedExperts | None:
    experts = getattr(getattr(layer, "mlp", None), "experts", None)
    return experts if isinstance(experts, UnfusedExperts) else None


@dataclass
class _Layer:
    """One decoder layer being quantized: the built layer, its non-expert tensors in the source dtype
    (in-memory names), its quantizable modules grouped by input."""

    layer: torch.nn.Module
    tensors: dict[str, torch.Tensor]
    groups: dict[str, tuple[str, ...]]
    scheme: Scheme
    options: GPTQOptions
    compressed_scheme: object

    def weight(self, module: str) -> torch.Tensor:
        expert = _expert_of(module)
        if expert is None:
            return self.tensors[f"{module}.weight"]
        return _experts(self.layer).weight(expert, module.rsplit(".", 1)[1])

    def set_weight(self, module: str, decoded: torch.Tensor) -> None:
        """The quantized module, as transformers will decode it (source dtype; float32 outside the experts)."""
        expert = _expert_of(module)
        if expert is None:
            self.layer.get_submodule(module).weight.data = decoded.float()
        else:
            _experts(self.layer).set_weight(expert, module.rsplit(".", 1)[1], decoded)

    def quantize_unit(self, unit: tuple[str, ...], hessians: dict[str, GPTQ], tokens: list[int] | None) -> dict:
        """GPTQ (or the fallback) for a unit's groups. A routed expert's Hessians are accumulated here, from
        its recorded inputs, and its weights read now: one expert's Hessians and source weights at a time."""
        expert = _expert_of(unit[0])
        if expert is not None:
            experts = _experts(self.layer)
            experts.load(expert)
            dtype = getattr(torch, self.options.hessian_dtype)
            hessians = {lead: GPTQ(self.layer.get_submodule(lead).in_features, dtype) for lead in unit}

            def observe(index: int, projection: str, inputs: torch.Tensor, weights: torch.Tensor | None) -> None:
                accumulator = hessians.get(f"{EXPERT_PREFIX}{index}.{projection}")
                if accumulator is not None:
                    accumulator.add_batch(inputs, weights if self.options.routing_weighted else None)

            down = f"{EXPERT_PREFIX}{expert}.down_proj" in hessians
            experts.calibrate(expert, observe, self.options.calibrate_all_experts, inner=down)
        out = {}
        for lead in unit:
            weights = {m: self.weight(m) for m in self.groups[lead]}
            results = quantize_group(
                weights, hessians.pop(lead), self.scheme.quantization.weights, self.options,
                tokens[expert] if expert is not None else None,
            )  # fmt: skip
            out |= {m: _finish(r, weights[m], self.compressed_scheme) for m, r in results.items()}
        return out


class _Collector:
    """Hessian accumulators for this rank's groups outside the routed experts (keyed by lead), fed by
    forward pre-hooks."""

    def __init__(self, layer: torch.nn.Module, leads: list[str], options: GPTQOptions) -> None:
        dtype = getattr(torch, options.hessian_dtype)
        self.gptq = {m: GPTQ(layer.get_submodule(m).in_features, dtype) for m in leads}
        self.hooks = [
            layer.get_submodule(m).register_forward_pre_hook(lambda _mod, args, m=m: self.gptq[m].add_batch(args[0]))
            for m in leads
        ]

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()


def _quantize_layer(work: _Layer, hidden: torch.Tensor, runner: LayerRunner, ranks: Ranks,
                    ) -> tuple[dict[str, Quantized], list[int] | None]:  # fmt: skip
    """Quantizes the layer's modules and puts their decoded weights into it; returns the results (in the
    groups' order, without the decoded weights; packed tensors on rank 0 only) and the routed tokens."""
    layer, groups = work.layer, work.groups
    units = work_units(groups)
    owners = ranks.owners([sum(_cost(layer, groups[lead]) for lead in unit) for unit in units])
    mine = [unit for unit, owner in zip(units, owners, strict=True) if owner == ranks.rank]
    collector = _Collector(layer, [unit[0] for unit in mine if _expert_of(unit[0]) is None], work.options)
    experts = _experts(layer)
    if experts is not None:
        experts.recording = []
        experts.tokens.zero_()
    try:
        runner.run(layer, hidden)  # statistics pass: Hessians outside the experts, the experts' inputs recorded
    finally:
        collector.close()
    tokens = experts.tokens.tolist() if experts is not None else None
    done: dict[str, Quantized] = {}
    # in rounds, one unit per rank each, so that a rank holds one unit's results of every rank at a time
    for round_ in range(max(owners.count(rank) for rank in range(ranks.world))):
        results = work.quantize_unit(mine[round_], collector.gptq, tokens) if round_ < len(mine) else {}
        for module, result in ranks.gather(results).items():
            work.set_weight(module, result.decoded)
            done[module] = replace(result, decoded=None, packed=result.packed if ranks.writer else None)
    if experts is not None:
        experts.recording = None
    return {m: done[m] for lead in groups for m in groups[lead]}, tokens


def _stats(index: int, results: dict[str, Quantized], tokens: list[int] | None, options: GPTQOptions) -> LayerStats:
    fallbacks: dict[str, list[str]] = {}
    for module, result in sorted(results.items(), key=lambda kv: _natural(kv[0])):
        if result.fallback:
            fallbacks.setdefault(result.fallback, []).append(module)
    worst = max(results, key=lambda m: (results[m].loss, m), default=None)
    change = sum(r.change for r in results.values())
    norm = sum(r.norm for r in results.values())
    return LayerStats(
        layer=index,
        quantized_modules=len(results),
        gptq_loss=sum(r.loss for r in results.values()),
        worst_module=worst,
        worst_loss=results[worst].loss if worst else 0.0,
        relative_weight_change=(change / norm) ** 0.5 if norm else 0.0,
        tokens_per_expert=tokens,
        fallbacks=fallbacks,
        dampened={m: r.dampening for m, r in sorted(results.items()) if r.dampening != options.dampening},
    )


def quantize_gptq(request: GPTQRequest) -> Outcome | None:
    """Rank 0 returns the outcome; other ranks return None once rank 0 has written."""
    if request.options is None:
        request = replace(request, options=GPTQOptions.for_scheme(request.scheme.name))
    torch.set_num_threads(request.options.threads)
    reuse_freed_memory()
    ranks = init_ranks()
    try:
        return _quantize(request, ranks)
    finally:
        close_ranks(ranks)


def _quantize(request: GPTQRequest, ranks: Ranks) -> Outcome | None:
    model = request.model.resolve()
    scheme = gptq_scheme(request.scheme, request.options)
    source = load_source(model)
    plan = plan_quantization(source, scheme)
    ids, calibration = build_calibration(request.calibration, model, request.data_root)
    index_sha, shard_sha = source_hashes(source)
    identity = SourceIdentity(name=model.name, index_sha256=index_sha, shard_sha256=shard_sha)
    target = Target(
        path=(request.out or default_output(model, scheme, request.output_root)).resolve(),
        identity=identity, scheme=resolve_scheme(scheme), options=request.options, calibration=calibration,
    )  # fmt: skip
    reused = prepare_target(target) if ranks.writer else None
    if ranks.broadcast(reused is not None):
        return reused
    scratch = target.scratch if ranks.writer else None
    try:
        report_layers = _run_layers(source, scheme, plan.quantized, ids, request.options, ranks, scratch)
        if not ranks.writer:
            ranks.barrier()
            return None
        fallbacks = {r: sum(len(s.fallbacks.get(r, [])) for s in report_layers) for r in FALLBACK_REASONS}
        report = GPTQReport(
            options=request.options, calibration=calibration, layers=report_layers,
            fallbacks=fallbacks,
        )  # fmt: skip
        outcome = write_checkpoint(source, scheme, plan.quantized, target, report)
        ranks.barrier()
        return outcome
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise


def _run_layers(source, scheme: Scheme, quantized: frozenset[str], ids: torch.Tensor, options: GPTQOptions,
                ranks: Ranks, scratch: Path | None) -> list[LayerStats]:  # fmt: skip
    config = load_config(source.path)
    reader = ShardReader(source)
    names = LayerNames(source.family)
    runner = LayerRunner(config, source.family, ids.shape[1], options.batch_size)
    compressed_scheme = scheme.quantization.model_copy(update={"format": scheme.format.value})
    hidden = embed(reader, ids)  # [S, L, H]
    stats = []
    if scratch is not None:
        (scratch / LAYER_DIR).mkdir(parents=True)
    for index in range(config.num_hidden_layers):
        tensors = reader.layer_tensors(index, experts=False)  # layer-local on-disk names; experts read as needed
        layer = build_layer(config, source.family, index, tensors, reader)
        modules = _layer_modules(quantized, index, names)
        if modules:
            in_memory = {names.tensor_in_memory(n): t for n, t in tensors.items()}
            work = _Layer(layer, in_memory, input_groups(list(modules)), scheme, options, compressed_scheme)
            results, tokens = _quantize_layer(work, hidden, runner, ranks)
            results = {modules[m]: r for m, r in results.items()}  # on-disk names from here on
            if scratch is not None:
                prefix = layer_prefix(index)
                packed = {
                    f"{prefix}{module}.{name}": tensor
                    for module, result in results.items()
                    for name, tensor in result.packed.items()
                }
                save_file(packed, scratch / LAYER_DIR / f"layer-{index:05d}.safetensors")
                stats.append(_stats(index, results, tokens, options))
            del work, results, in_memory
        experts = _experts(layer)
        for expert in range(experts.num_experts if experts is not None else 0):
            experts.load(expert)  # what is not quantized here, as it is in the checkpoint
        hidden = runner.run(layer, hidden)  # the next layer's input, from quantized weights
        del layer, tensors
    return stats
