"""Other model families: tiny random Qwen3-MoE, Mixtral and Llama checkpoints, made from transformers
configs with `save_pretrained` (one `model.safetensors`, the Hub's per-expert layout), quantized with
every scheme (RTN; GPTQ for one scheme each), loaded back in transformers and measured by the
harness (perplexity, KL, routing agreement against the BF16 source)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, LlamaConfig, MixtralConfig, Qwen3MoeConfig

from harness.backends.hf import HFBackend
from harness.suites.loader import load_suite
from harness.suites.perplexity import KIND
from quant.build import QuantizeRequest, quantize
from quant.dequantize import dequantize_checkpoint
from quant.gptq.layerwise import LayerRunner, ShardReader, build_layer, embed, load_config
from quant.gptq.run import GPTQRequest, quantize_gptq
from quant.schemes import get_scheme, scheme_names
from quant.source import load_source
from quantgate.cli import main
from quantgate.core.errors import InputError
from quantgate.core.families import FAMILIES, family_of_checkpoint
from quantgate.core.gptq import CalibrationSpec

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
COMMON = dict(  # the bundled model's tokenizer; 128-wide Linears so fp8-block's 128x128 blocks fit
    vocab_size=2048, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=512, bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False,
)  # fmt: skip
CONFIGS = {
    "qwen3_moe": lambda: Qwen3MoeConfig(
        **COMMON, intermediate_size=256, moe_intermediate_size=128, num_experts=4, num_experts_per_tok=2, head_dim=32
    ),
    "mixtral": lambda: MixtralConfig(**COMMON, intermediate_size=128, num_local_experts=4, num_experts_per_tok=2),
    "llama": lambda: LlamaConfig(**COMMON, intermediate_size=256),
}
# transformers 5.24 cannot load these (tests/quant/test_clients.py); measured after quant.dequantize
TRANSFORMERS_CANNOT_LOAD = {"w8a8-int8", "nvfp4a16"}
ROUTED_ONLY = {"kimi-k2-thinking-int4", "w3a16-g32", "w2a16-g32"}
GPTQ_SCHEME = {"qwen3_moe": "w4a16-g128", "mixtral": "kimi-k2-thinking-int4", "llama": "w4a16-g128"}
CALIBRATION = CalibrationSpec(samples=4, sample_length=64)
SUITE = dict(  # a handful of held-out windows
    kind="perplexity", version=1, data=ROOT / "suites" / "data" / "tinyk2" / "heldout_text.jsonl",
    context_length=48, stride=48, top_k=16, batch_size=8, max_documents=2,
)  # fmt: skip


def make_checkpoint(family: str, target: Path, bundled_model: Path) -> Path:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[family](), dtype=torch.bfloat16)
    model.save_pretrained(target)
    for name in TOKENIZER_FILES:
        shutil.copyfile(bundled_model / name, target / name)
    return target


@pytest.fixture(scope="module")
def checkpoints(bundled_model: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: make_checkpoint(family, root / f"tiny-{family}", bundled_model) for family in CONFIGS}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "ppl.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in SUITE.items()))
    return load_suite(path)


def _measure(path: Path, suite, out: Path, baseline=None) -> dict[str, float]:
    backend = HFBackend(path, dtype="float32", threads=2, batch_size=8)
    if baseline is None:
        return KIND.measure(suite, backend, out)
    measurement = KIND.measure_against(suite, backend, out, baseline)
    own = {m.name: m.value for m in measurement.metrics}
    return own | {m.name: m.value for m in KIND.compare(suite, measurement, baseline)}


def test_the_hub_layout_on_disk_names_each_family(checkpoints) -> None:
    for family, path in checkpoints.items():
        assert family_of_checkpoint(path) is FAMILIES[family]
        assert not (path / "model.safetensors.index.json").exists()  # single file: read without an index
        with safe_open(path / "model.safetensors", framework="pt") as handle:
            groups = {FAMILIES[family].group_of(n.removesuffix(".weight")) for n in handle.keys()}
        expected = {"attention", "lm_head", "embeddings", None}  # None: norms
        expected |= {"dense_mlp"} if family == "llama" else {"routed_experts", "router"}
        assert groups == expected, family


@pytest.mark.parametrize("family", list(CONFIGS))
def test_every_scheme_quantizes_loads_and_measures(family, checkpoints, suite, tmp_path) -> None:
    source = checkpoints[family]
    baseline = _measure(source, suite, tmp_path / "base")
    routed_layers = 2 if family != "llama" else 0
    with safe_open(source / "model.safetensors", framework="pt") as handle:
        present = {FAMILIES[family].group_of(n.removesuffix(".weight")) for n in handle.keys()}
    for name in scheme_names():
        scheme = get_scheme(name, FAMILIES[family])
        if family == "llama" and name in ROUTED_ONLY:
            with pytest.raises(InputError, match=f"{name}' quantizes routed_experts only; .* llama checkpoint"):
                quantize(QuantizeRequest(source, scheme, output_root=tmp_path))
            continue
        built = quantize(QuantizeRequest(source, scheme, output_root=tmp_path)).path
        config = json.loads((built / "config.json").read_text())["quantization_config"]
        assert config["ignore"] == list(scheme.ignore)
        weight_map = json.loads((built / "model.safetensors.index.json").read_text())["weight_map"]
        quantized = {FAMILIES[family].group_of(n.rsplit(".", 1)[0]) for n in weight_map if ".weight_" in n}
        assert quantized == set(scheme.expected_groups) & present, (family, name)
        measured = built
        if name in TRANSFORMERS_CANNOT_LOAD:
            measured = dequantize_checkpoint(built, tmp_path / f"{built.name}-bf16")
        metrics = _measure(measured, suite, tmp_path / name, baseline)
        assert 0 < metrics["kl_mean"] < 0.5, (family, name)
        assert metrics["perplexity"] > 1
        routing = [k for k in metrics if k.startswith("routing_same_experts.layer_")]
        assert len(routing) == routed_layers, (family, name)
        if routed_layers:
            assert 0.3 < metrics["routing_same_experts_mean"] <= 1.0, (family, name)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_gptq_calibrates_each_family_per_expert(family, checkpoints, tmp_path) -> None:
    source = checkpoints[family]
    scheme = get_scheme(GPTQ_SCHEME[family], FAMILIES[family])
    request = GPTQRequest(source, scheme, output_root=tmp_path, calibration=CALIBRATION, data_root=ROOT)
    outcome = quantize_gptq(request)
    report = outcome.manifest.gptq
    tokens = [layer.tokens_per_expert for layer in report.layers]
    if family == "llama":
        assert tokens == [None, None]
    else:  # every calibration token goes to top-k=2 of 4 experts, in each MoE layer
        assert [sum(t) for t in tokens] == [2 * CALIBRATION.samples * CALIBRATION.sample_length] * 2
    model = AutoModelForCausalLM.from_pretrained(outcome.path, dtype=torch.float32)
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[5, 17, 123, 404]])).logits).all()


@pytest.mark.parametrize("family", list(CONFIGS))
def test_layerwise_forward_matches_transformers(family, checkpoints) -> None:
    """GPTQ's layer by layer forward (unfused experts, on-disk names mapped) is transformers' model."""
    source = load_source(checkpoints[family])
    config, reader = load_config(source.path), ShardReader(source)
    ids = torch.tensor([[5, 17, 123, 404, 77, 1024, 9, 300, 2000, 64, 11, 1500]])  # [1, L]
    runner = LayerRunner(config, source.family, ids.shape[1])
    hidden = embed(reader, ids)
    for index in range(config.num_hidden_layers):
        hidden = runner.run(build_layer(config, source.family, index, reader.layer_tensors(index)), hidden)
    model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32)
    with torch.no_grad():
        want = model(ids, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(model.model.norm(hidden), want, atol=1e-4)


def test_an_unknown_family_is_one_line_exit_2(checkpoints, tmp_path, capsys) -> None:
    source = tmp_path / "phi"
    shutil.copytree(checkpoints["llama"], source)
    config = json.loads((source / "config.json").read_text())
    config |= {"model_type": "phimoe", "architectures": ["PhimoeForCausalLM"]}
    (source / "config.json").write_text(json.dumps(config))
    assert main(["quantize", "--model", str(source), "--scheme", "w8a16", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "architecture PhimoeForCausalLM (model_type 'phimoe') is not supported" in error
    assert "supported: deepseek_v3 (deepseek_v3/kimi_k2), qwen3_moe (qwen3_moe), mixtral" in error
    assert not (tmp_path / "out").exists()
