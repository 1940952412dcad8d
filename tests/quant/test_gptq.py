"""GPTQ (`quantgate quantize --method gptq`) on the bundled model: quality against RTN, MoE routing of
calibration tokens, fallbacks, torchrun with 2 gloo processes, and loading in transformers."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.lifecycle.forward import fake_quantize
from gptq_heldout import kl_mean, perplexity, score
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from quant.build import Outcome
from quant.gptq.arguments import add_gptq_arguments, gptq_request
from quant.gptq.calibration import build_calibration
from quant.gptq.distributed import Ranks
from quant.gptq.gptq import GPTQ, ColumnQuantizer, HessianFailure, _inverse_cholesky, _inverse_lower
from quant.gptq.layerwise import LayerRunner, ShardReader, build_layer, embed, load_config
from quant.gptq.modules import compress, quantize_group, quantize_module
from quant.gptq.run import GPTQRequest, input_groups, quantize_gptq
from quant.heap import reuse_freed_memory
from quant.rtn import compress_weight, weight_qparams
from quant.schemes import get_scheme
from quant.source import load_source
from quantgate.cli import main
from quantgate.core.gptq import FEW_TOKENS, HESSIAN, CalibrationSpec, GPTQOptions
from quantgate.core.manifest import load_manifest, verify_files

ROOT = Path(__file__).resolve().parents[2]
CALIBRATION = CalibrationSpec()  # the default: 64 x 256 tokens, ~4000 per routed expert
TINY = CalibrationSpec(samples=2, sample_length=64)
INT4_G32 = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=32)


@pytest.fixture(scope="session")
def gptq_built(model_copy: Path, tmp_path_factory) -> Callable[[str], Outcome]:
    root = tmp_path_factory.mktemp("gptq")
    cache: dict[str, Outcome] = {}

    def build(name: str) -> Outcome:
        if name not in cache:
            request = GPTQRequest(model_copy, get_scheme(name), output_root=root, calibration=CALIBRATION)
            cache[name] = quantize_gptq(request)
        return cache[name]

    return build


@pytest.fixture(scope="session")
def baseline_scores(model_copy: Path):
    return score(model_copy, ROOT / "suites/data/tinyk2/heldout_text.jsonl")


# -- the algorithm -------------------------------------------------------------------------------
def test_column_quantizer_equals_compressed_tensors() -> None:
    torch.manual_seed(0)
    column, scale = torch.randn(64), torch.rand(64) * 0.2 + 0.01  # [O]
    zero = torch.zeros(64)
    column_args = INT4_G32.model_copy(update={"strategy": "channel", "group_size": None})
    want = fake_quantize(column[:, None], scale[:, None], zero[:, None].to(torch.int8), column_args)[:, 0]
    for given_zero in (zero, None):  # symmetric: no zero point
        got = torch.empty_like(column)
        ColumnQuantizer(INT4_G32).into(column, scale, given_zero, got)
        assert torch.equal(got, want)


@pytest.mark.parametrize("columns", [7, 128, 300, 1024])
def test_inverse_cholesky_is_the_upper_factor_of_the_damped_inverse(columns: int) -> None:
    """One Cholesky and a triangular inverse by halves give the factor of the reference sequence
    (Cholesky, cholesky_inverse, Cholesky upper) to float32 rounding, and U^T U = (H + damp)^-1."""
    torch.manual_seed(columns)
    x = torch.randn(2 * columns, columns, dtype=torch.float64) * (torch.rand(columns, dtype=torch.float64) + 0.1)
    hessian = (2 / x.shape[0] * x.T @ x).float()  # [I, I]
    damped = hessian.double() + 0.01 * torch.diag(hessian.double()).mean() * torch.eye(columns, dtype=torch.float64)
    reference = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True)
    got = _inverse_cholesky(hessian, 0.01)
    assert torch.equal(got, got.triu()) and bool((got.diagonal() > 0).all())
    torch.testing.assert_close(got.double(), reference, rtol=2e-4, atol=2e-4 * float(reference.abs().max()))
    lower = torch.linalg.cholesky(damped.flip(0, 1))
    torch.testing.assert_close(_inverse_lower(lower), torch.linalg.inv(lower), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("actorder", ["none", "static"])
def test_gptq_lowers_output_error_and_keeps_rtn_scales(actorder: str) -> None:
    torch.manual_seed(0)
    weight = (torch.randn(32, 128) * 0.05).bfloat16()  # [O, I]
    x = torch.randn(2048, 128) @ torch.randn(128, 128) * 0.3  # correlated inputs [n, I]
    gptq = GPTQ(128)
    gptq.add_batch(x)
    options = GPTQOptions(actorder=actorder)
    result = quantize_module(weight, gptq, INT4_G32, options, expert_tokens=None)
    rtn = quantize_module(weight, None, INT4_G32, options, expert_tokens=None)  # no statistics: RTN fallback
    assert rtn.fallback == FEW_TOKENS and result.fallback is None
    assert torch.equal(result.qparams["weight_scale"], weight_qparams(weight, INT4_G32)["weight_scale"])
    w = weight.float()
    assert ((x @ (result.dequantized - w).T) ** 2).sum() < 0.8 * ((x @ (rtn.dequantized - w).T) ** 2).sum()
    scheme = QuantizationScheme(targets=["Linear"], weights=INT4_G32, format="pack-quantized")
    packed = compress(result, scheme)  # compressed-tensors' packing of GPTQ's integers
    ints = unpack_from_int32(packed["weight_packed"], 4, torch.Size(packed["weight_shape"].tolist()))  # [O, I]
    scale = packed["weight_scale"].float().repeat_interleave(32, dim=1)  # [O, I]
    assert torch.equal(ints.float() * scale, result.dequantized)


def test_modules_reading_one_input_share_one_hessian_and_one_gptq_run() -> None:
    modules = [
        "mlp.experts.0.down_proj", "mlp.experts.0.gate_proj", "mlp.experts.0.up_proj", "mlp.experts.1.up_proj",
        "self_attn.kv_a_proj_with_mqa", "self_attn.q_a_proj", "self_attn.q_b_proj", "self_attn.o_proj",
    ]  # fmt: skip
    assert input_groups(modules) == {
        "mlp.experts.0.down_proj": ("mlp.experts.0.down_proj",),
        "mlp.experts.0.gate_proj": ("mlp.experts.0.gate_proj", "mlp.experts.0.up_proj"),
        "mlp.experts.1.up_proj": ("mlp.experts.1.up_proj",),  # its gate_proj is not quantized: its own lead
        "self_attn.q_a_proj": ("self_attn.q_a_proj", "self_attn.kv_a_proj_with_mqa"),
        "self_attn.q_b_proj": ("self_attn.q_b_proj",),
        "self_attn.o_proj": ("self_attn.o_proj",),
    }
    torch.manual_seed(0)
    gate, up = ((torch.randn(32, 128) * 0.05).bfloat16() for _ in range(2))  # [O, I]
    gptq = GPTQ(128)
    gptq.add_batch(torch.randn(512, 128) @ torch.randn(128, 128))
    together = quantize_group({"gate": gate, "up": up}, gptq, INT4_G32, GPTQOptions(), expert_tokens=None)
    for name, weight in (("gate", gate), ("up", up)):
        alone = quantize_module(weight, gptq, INT4_G32, GPTQOptions(), expert_tokens=None)
        assert torch.allclose(together[name].dequantized, alone.dequantized, atol=1e-6)
        assert together[name].loss == pytest.approx(alone.loss, rel=1e-5)


def test_defaults_are_per_scheme_and_a_given_flag_wins(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_gptq_arguments(parser)

    def options(scheme: str, *flags: str) -> GPTQOptions:
        return gptq_request(parser.parse_args(list(flags)), tmp_path, get_scheme(scheme), None, None).options

    assert options("w4a16-g128").dampening == options("kimi-k2-thinking-int4").dampening == 0.01
    assert options("w3a16-g32").dampening == 0.1
    assert options("w3a16-g32").observer == options("w4a16-g128").observer == "mse"
    assert options("kimi-k2-thinking-int4").observer == "minmax"
    assert options("w4a16-g128", "--observer", "minmax").observer == "minmax"
    assert options("w3a16-g32", "--dampening", "0.02").dampening == 0.02
    assert options("w4a16-g128", "--calibrate-all-experts").calibrate_all_experts
    assert options("w4a16-g128") == GPTQOptions.for_scheme("w4a16-g128")


def test_ranks_deal_every_group_once_by_cost() -> None:
    costs = [8.0, 1.0, 1.0, 4.0, 4.0, 2.0]
    shares = [Ranks(rank, 2).deal(costs) for rank in range(2)]
    assert all(a != b for a, b in zip(*shares, strict=True))  # each item to exactly one rank
    loads = [sum(c for c, mine in zip(costs, share, strict=True) if mine) for share in shares]
    assert loads == [10.0, 10.0]
    assert Ranks(0, 1).deal(costs) == [True] * len(costs)


def test_bad_hessian_falls_back_to_rtn() -> None:
    weight = (torch.randn(8, 32) * 0.05).bfloat16()
    nan = GPTQ(32)
    nan.add_batch(torch.full((4, 32), float("nan")))
    indefinite = GPTQ(32)
    indefinite.xtx, indefinite.rows = -torch.eye(32, dtype=torch.float64), 4  # no dampening makes it PD
    args = INT4_G32.model_copy(update={"group_size": 32})
    for gptq in (nan, indefinite):
        with pytest.raises(HessianFailure):
            gptq.quantize(weight.float(), weight_qparams(weight, args), args, 128, 0.01, False)
        result = quantize_module(weight, gptq, args, GPTQOptions(), expert_tokens=None)
        assert result.fallback == HESSIAN
        scheme = QuantizationScheme(targets=["Linear"], weights=args, format="pack-quantized")
        packed, rtn = compress(result, scheme), compress_weight(weight, scheme)  # the fallback is RTN's bytes
        assert packed.keys() == rtn.keys() and all(torch.equal(packed[k], rtn[k]) for k in rtn)


# -- MoE calibration -----------------------------------------------------------------------------
def test_layerwise_forward_matches_transformers_and_experts_see_their_routed_tokens(model_copy: Path) -> None:
    from transformers import AutoModelForCausalLM

    ids, _ = build_calibration(CalibrationSpec(samples=2, sample_length=64), model_copy, ROOT)
    source = load_source(model_copy)
    config, reader, family = load_config(model_copy), ShardReader(source), source.family
    runner = LayerRunner(config, family, 64)
    hidden = embed(reader, ids)  # [S, L, H]
    inputs_of_layer_1 = None
    for index in range(config.num_hidden_layers):
        if index == 1:
            inputs_of_layer_1 = hidden
        hidden = runner.run(build_layer(config, family, index, reader.layer_tensors(index)), hidden)
    model = AutoModelForCausalLM.from_pretrained(model_copy, dtype=torch.float32)
    with torch.no_grad():
        want = model(ids, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(model.model.norm(hidden), want, atol=1e-4)

    layer = build_layer(config, family, 1, reader.layer_tensors(1))
    experts = layer.mlp.experts
    routed_out = runner.run(layer, inputs_of_layer_1)
    # the experts read one at a time (as quantization does) compute the same
    lazy = build_layer(config, family, 1, reader.layer_tensors(1, experts=False), reader)
    assert lazy.mlp.experts.weight(0, "gate_proj").is_meta
    for expert in range(config.n_routed_experts):
        lazy.mlp.experts.load(expert)
    assert torch.equal(runner.run(lazy, inputs_of_layer_1), routed_out)
    experts.recording = []
    runner.run(layer, inputs_of_layer_1)  # records the experts' inputs
    captured: dict[tuple[int, str], torch.Tensor] = {}

    def observe(e: int, proj: str, x: torch.Tensor, _w) -> None:
        captured[(e, proj)] = x.clone()

    with torch.no_grad():
        attn_out = inputs_of_layer_1 + layer.self_attn(
            layer.input_layernorm(inputs_of_layer_1), attention_mask=None,
            position_embeddings=runner.position_embeddings, position_ids=runner.positions,
        )[0]  # fmt: skip
        mlp_in = layer.post_attention_layernorm(attn_out).reshape(-1, config.hidden_size)  # [N, H]
        _, _, top_k = layer.mlp.gate(mlp_in)  # [N, k]
        for expert in range(config.n_routed_experts):
            experts.calibrate(expert, observe)
            rows = (top_k == expert).any(-1)
            assert torch.equal(captured[(expert, "gate_proj")], mlp_in[rows]), expert
            assert experts.tokens[expert] == int(rows.sum())
            experts.calibrate(expert, observe, calibrate_all=True)  # statistics from every token
            assert torch.equal(captured[(expert, "up_proj")], mlp_in)


@pytest.fixture(scope="session")
def starved_model(model_copy: Path, tmp_path_factory) -> Path:
    """The bundled model with layer 1's router bias forcing expert 0 out of every token's top 4."""
    target = tmp_path_factory.mktemp("starved") / "kimi-k2-tiny-starved"
    shutil.copytree(model_copy, target)
    name = "model.layers.1.mlp.gate.e_score_correction_bias"
    shard = next(p for p in sorted(target.glob("*.safetensors")) if name in safe_open(p, "pt").keys())
    tensors = load_file(shard)
    tensors[name] = tensors[name].clone()
    tensors[name][0] = -1.0e4
    save_file(tensors, shard, metadata={"format": "pt"})
    return target


@pytest.fixture(scope="session")
def starved_gptq(starved_model: Path, tmp_path_factory) -> Outcome:
    out = tmp_path_factory.mktemp("starved-out") / "single"
    request = GPTQRequest(starved_model, get_scheme("kimi-k2-thinking-int4"), out=out, calibration=TINY)
    return quantize_gptq(request)


def test_expert_no_token_reaches_takes_the_rtn_fallback(starved_model: Path, starved_gptq: Outcome) -> None:
    report = starved_gptq.manifest.gptq
    layer1 = next(s for s in report.layers if s.layer == 1)
    assert layer1.tokens_per_expert[0] == 0
    starved = [f"mlp.experts.0.{p}_proj" for p in ("gate", "up", "down")]
    assert set(starved) <= set(layer1.fallbacks[FEW_TOKENS])
    assert report.fallbacks[FEW_TOKENS] == sum(len(s.fallbacks.get(FEW_TOKENS, [])) for s in report.layers)
    # the fallback is RTN: the same bytes `quantgate quantize` writes for that expert
    reader = ShardReader(load_source(starved_model))
    scheme = get_scheme("kimi-k2-thinking-int4").quantization.model_copy(update={"format": "pack-quantized"})
    for module in starved:
        name = f"model.layers.1.{module}"
        rtn = compress_weight(reader.get(f"{name}.weight"), scheme)
        got = _tensors(starved_gptq.path, name)
        assert got.keys() == rtn.keys() and all(torch.equal(got[k], rtn[k]) for k in rtn)


def _tensors(checkpoint: Path, module: str) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(shard, "pt") as handle:
            keys = [k for k in handle.keys() if k.startswith(f"{module}.")]
            out |= {k.removeprefix(f"{module}."): handle.get_tensor(k) for k in keys}
    return out


def test_torchrun_two_gloo_processes_write_the_same_bytes(starved_model: Path, starved_gptq: Outcome, tmp_path) -> None:
    out = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "quantgate.cli", "quantize", "--model", str(starved_model), "--scheme", "kimi-k2-thinking-int4",
        "--method", "gptq", "--out", str(out), "--calibration-samples", str(TINY.samples),
        "--calibration-length", str(TINY.sample_length),
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 writes
    names = sorted(p.name for p in starved_gptq.path.iterdir())
    assert names == sorted(p.name for p in out.iterdir())
    for name in names:
        assert (out / name).read_bytes() == (starved_gptq.path / name).read_bytes(), name


# -- quality and loading -------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["w4a16-g128", "w3a16-g32"])
def test_gptq_beats_rtn_on_heldout_kl_and_keeps_perplexity(scheme, built, gptq_built, baseline_scores) -> None:
    """GPTQ is closer to BF16's next-token distribution than RTN. Perplexity does not order them on the
    retrained model (RTN's w4a16-g128 is even below BF16's: 2.4784 against 2.4821; GPTQ 2.4823 with the
    default mse scales), so it is only held within 0.5 % of BF16's."""
    data = ROOT / "suites/data/tinyk2/heldout_text.jsonl"
    rtn, gptq = score(built(scheme).path, data), score(gptq_built(scheme).path, data)
    base_ppl = perplexity(baseline_scores)
    print(f"{scheme}: bf16 ppl {base_ppl:.4f}; rtn ppl {perplexity(rtn):.4f} kl {kl_mean(baseline_scores, rtn):.5f}; "
          f"gptq ppl {perplexity(gptq):.4f} kl {kl_mean(baseline_scores, gptq):.5f}")  # fmt: skip
    assert kl_mean(baseline_scores, gptq) < kl_mean(baseline_scores, rtn)
    assert abs(perplexity(gptq) / base_ppl - 1) < 0.005


def test_output_is_rtn_layout_with_gptq_manifest(built, gptq_built) -> None:
    gptq, rtn = gptq_built("w4a16-g128"), built("w4a16-g128")
    manifest = load_manifest(gptq.path)
    assert manifest.method == "gptq" and verify_files(gptq.path, manifest) == []
    assert manifest.gptq.calibration.samples == CALIBRATION.samples == 64
    assert len(manifest.gptq.calibration.sha256) == 64
    assert [s.layer for s in manifest.gptq.layers] == [0, 1, 2, 3]
    assert all(sum(s.tokens_per_expert) == 4 * 64 * 256 for s in manifest.gptq.layers if s.tokens_per_expert)
    for shard in sorted(rtn.path.glob("*.safetensors")):
        with safe_open(shard, "pt") as a, safe_open(gptq.path / shard.name, "pt") as b:
            assert sorted(a.keys()) == sorted(b.keys())
            for key in a.keys():
                assert a.get_slice(key).get_dtype() == b.get_slice(key).get_dtype()
                assert a.get_slice(key).get_shape() == b.get_slice(key).get_shape()


def test_cli_rejects_a_bad_calibration_source(model_copy: Path, tmp_path: Path, capsys) -> None:
    argv = ["quantize", "--model", str(model_copy), "--scheme", "w4a16-g128", "--method", "gptq",
            "--out", str(tmp_path / "x"), "--calibration", "audio:nothing.jsonl"]  # fmt: skip
    assert main(argv) == 2
    assert "calibration source 'audio:nothing.jsonl'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_freed_memory_is_reused_under_glibc() -> None:
    """The GPTQ path sets glibc's mmap and trim thresholds (quant/heap.py); this machine runs glibc."""
    assert reuse_freed_memory() is True
