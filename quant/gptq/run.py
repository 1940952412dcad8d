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


def _cost(weights: list[torch.Tensor]) -> float:
    """GPTQ's work for a group, roughly: factorizing the [I, I] Hessian and updating the stacked rows."""
    columns = weights[0].shape[1]
    return float(columns**3 + sum(w.shape[0] for w in weights) * columns**2)


class _Collector:
    """Hessian accumulators for this rank's input groups of one layer (keyed by lead), fed by hooks and by
    the experts."""

    def __init__(self, layer: torch.nn.Module, leads: list[str], options: GPTQOptions) -> None:
        self.routing_weighted = options.routing_weighted
        dtype = getattr(torch, options.hessian_dtype)
        self.gptq = {m: GPTQ(layer.get_submodule(m).in_features, dtype) for m in leads}
        self.hooks = [
            layer.get_submodule(m).register_forward_pre_hook(lambda _mod, args, m=m: self.gptq[m].add_batch(args[0]))
            for m in leads
            if _expert_of(m) is None
        ]

    def observe(self, expert: int, projection: str, inputs: torch.Tensor, weights: torch.Tensor | None) -> None:
        accumulator = self.gptq.get(f"{EXPERT_PREFIX}{expert}.{projection}")
        if accumulator is not None:
            accumulator.add_batch(inputs, weights if self.routing_weighted else None)

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()


def _quantize_layer(
    layer: torch.nn.Module, modules: list[str], hidden: torch.Tensor, runner: LayerRunner, tensors: dict,
    scheme: Scheme, options: GPTQOptions, ranks: Ranks,
) -> tuple[dict[str, ModuleResult], list[int] | None]:  # fmt: skip
    groups = input_groups(modules)
    costs = [_cost([tensors[f"{m}.weight"] for m in members]) for members in groups.values()]
    owned = [lead for lead, mine in zip(groups, ranks.deal(costs), strict=True) if mine]
    collector = _Collector(layer, owned, options)
    experts = layer.mlp.experts if isinstance(getattr(layer.mlp, "experts", None), UnfusedExperts) else None
    if experts is not None:
        experts.observe, experts.calibrate_all = collector.observe, options.calibrate_all_experts
        experts.tokens.zero_()
    try:
        runner.run(layer, hidden)  # Hessian pass
    finally:
        collector.close()
        if experts is not None:
            experts.observe = None
    tokens = experts.tokens.tolist() if experts is not None else None
    args = scheme.quantization.weights
    mine = {}
    for lead in owned:
        expert = _expert_of(lead)
        mine |= quantize_group(
            {m: tensors[f"{m}.weight"] for m in groups[lead]}, collector.gptq.pop(lead), args, options,
            tokens[expert] if expert is not None else None,
        )  # fmt: skip
    return ranks.gather(mine), tokens


def _stats(index: int, results: dict[str, ModuleResult], tensors: dict, tokens: list[int] | None,
           options: GPTQOptions) -> LayerStats:  # fmt: skip
    fallbacks: dict[str, list[str]] = {}
    for module, result in sorted(results.items(), key=lambda kv: _natural(kv[0])):
        if result.fallback:
            fallbacks.setdefault(result.fallback, []).append(module)
    worst = max(results, key=lambda m: (results[m].loss, m), default=None)
    change = sum(float((r.dequantized - tensors[f"{m}.weight"].float()).square().sum()) for m, r in results.items())
    norm = sum(float(tensors[f"{m}.weight"].float().square().sum()) for m in results)
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
        tensors = reader.layer_tensors(index)  # layer-local on-disk names
        layer = build_layer(config, source.family, index, tensors)
        modules = _layer_modules(quantized, index, names)
        if modules:
            in_memory = {names.tensor_in_memory(n): t for n, t in tensors.items()}
            results, tokens = _quantize_layer(layer, list(modules), hidden, runner, in_memory, scheme, options, ranks)
            for module, result in results.items():  # the quantized layer, as transformers will decode it (bf16)
                decoded = result.dequantized.to(in_memory[f"{module}.weight"].dtype)
                layer.get_submodule(module).weight.data = decoded.float()
            results = {modules[m]: r for m, r in results.items()}  # on-disk names from here on
            if scratch is not None:
                prefix = layer_prefix(index)
                packed = {
                    f"{prefix}{module}.{name}": tensor
                    for module, result in results.items()
                    for name, tensor in compress(result, compressed_scheme).items()
                }
                save_file(packed, scratch / LAYER_DIR / f"layer-{index:05d}.safetensors")
                stats.append(_stats(index, results, tensors, tokens, options))
        hidden = runner.run(layer, hidden)  # the next layer's input, from quantized weights
        del layer, tensors
    return stats
