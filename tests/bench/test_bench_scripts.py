"""The benchmark's parts at small scale: the synthetic checkpoint, the argument parsing, the
tensor-by-tensor comparison and the child-process measurement. No llm-compressor needed."""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import pytest
import torch
from compare_checkpoints import compare_checkpoints
from make_synthetic_moe import INDEX_NAME, make_checkpoint
from measure import run_measured
from quantize_throughput import DEFAULT_SCHEMES, parse_args
from safetensors import safe_open
from safetensors.torch import save_file

from quant.schemes import get_scheme
from quant.select import plan_quantization
from quant.source import load_source
from quantgate.core.families import group_of

SIZE_GB, SHARD_GB = 0.02, 0.005
EXPERT = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic") / "moe"
    return out, make_checkpoint(out, SIZE_GB, SHARD_GB)


def _headers(checkpoint: Path) -> dict[str, dict[str, dict]]:
    """shard file name -> its safetensors header (tensor name -> dtype, shape, offsets)."""
    headers = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        with shard.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        header.pop("__metadata__", None)
        headers[shard.name] = header
    return headers


def test_index_matches_shards_and_size(synthetic: tuple[Path, dict]) -> None:
    path, summary = synthetic
    index = json.loads((path / INDEX_NAME).read_text())
    headers = _headers(path)
    placed = {name: shard for shard, header in headers.items() for name in header}
    assert index["weight_map"] == placed
    data_bytes = sum(
        info["data_offsets"][1] - info["data_offsets"][0] for h in headers.values() for info in h.values()
    )
    assert index["metadata"]["total_size"] == data_bytes == summary["bytes"]
    assert SIZE_GB * 1e9 <= data_bytes <= 1.1 * SIZE_GB * 1e9
    assert len(headers) == summary["shards"] > 1
    largest_tensor = max(
        i["data_offsets"][1] - i["data_offsets"][0] for h in headers.values() for i in h.values()
    )
    for shard, header in headers.items():
        assert re.fullmatch(rf"model-\d{{5}}-of-{len(headers):05d}\.safetensors", shard)
        shard_data = sum(i["data_offsets"][1] - i["data_offsets"][0] for i in header.values())
        assert shard_data <= SHARD_GB * 1e9 + largest_tensor


def test_names_and_shapes_are_kimi_k2s(synthetic: tuple[Path, dict]) -> None:
    path, summary = synthetic
    config = json.loads((path / "config.json").read_text())
    assert (config["architectures"], config["model_type"]) == (["DeepseekV3ForCausalLM"], "deepseek_v3")
    shapes = {n: (i["dtype"], tuple(i["shape"])) for h in _headers(path).values() for n, i in h.items()}
    H, E, L = config["hidden_size"], config["n_routed_experts"], config["num_hidden_layers"]
    mI, heads = config["moe_intermediate_size"], config["num_attention_heads"]
    assert E == summary["n_routed_experts"]
    experts = {(int(m[1]), int(m[2]), m[3]) for n in shapes if (m := EXPERT.fullmatch(n))}
    assert experts == {
        (layer, e, p) for layer in range(1, L) for e in range(E) for p in ("gate", "up", "down")
    }
    assert shapes["model.layers.1.mlp.experts.0.gate_proj.weight"] == ("BF16", (mI, H))
    assert shapes["model.layers.1.mlp.experts.0.down_proj.weight"] == ("BF16", (H, mI))
    assert shapes["model.layers.1.mlp.gate.weight"] == ("BF16", (E, H))
    assert shapes["model.layers.1.mlp.gate.e_score_correction_bias"] == ("F32", (E,))
    assert shapes["model.layers.1.mlp.shared_experts.up_proj.weight"] == (
        "BF16",
        (mI * config["n_shared_experts"], H),
    )
    assert shapes["model.layers.0.mlp.gate_proj.weight"] == ("BF16", (config["intermediate_size"], H))
    assert not any(n.startswith("model.layers.0.mlp.experts.") for n in shapes)  # first layer dense
    q_head = config["qk_nope_head_dim"] + config["qk_rope_head_dim"]
    assert shapes["model.layers.2.self_attn.q_b_proj.weight"] == (
        "BF16",
        (heads * q_head, config["q_lora_rank"]),
    )
    assert shapes["model.layers.2.self_attn.kv_a_proj_with_mqa.weight"] == (
        "BF16",
        (config["kv_lora_rank"] + config["qk_rope_head_dim"], H),
    )
    assert shapes["model.layers.2.self_attn.o_proj.weight"] == ("BF16", (H, heads * config["v_head_dim"]))
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} <= shapes.keys()
    for name, (_, shape) in shapes.items():
        if len(shape) == 2 and name != "model.embed_tokens.weight":
            assert shape[1] % 128 == 0, name


def test_quantgate_reads_it_and_plans_routed_experts(synthetic: tuple[Path, dict]) -> None:
    source = load_source(synthetic[0])
    plan = plan_quantization(source, get_scheme("kimi-k2-thinking-int4"))
    assert {group_of(n.removesuffix(".weight")) for n in plan.quantized} == {"routed_experts"}
    assert len(plan.quantized) == sum(1 for n in source.tensors if EXPERT.fullmatch(n))


def test_values_depend_on_name_and_seed_not_on_sharding(synthetic: tuple[Path, dict], tmp_path: Path) -> None:
    name = "model.layers.2.mlp.experts.1.up_proj.weight"
    other = tmp_path / "other"
    make_checkpoint(other, SIZE_GB / 4, shard_gb=SIZE_GB)  # fewer experts, one shard
    tensors = []
    for path in (synthetic[0], other):
        shard = json.loads((path / INDEX_NAME).read_text())["weight_map"][name]
        with safe_open(path / shard, framework="pt") as handle:
            tensors.append(handle.get_tensor(name))
    assert torch.equal(tensors[0], tensors[1])
    assert 0.5 < float(tensors[0].float().std() * tensors[0].shape[1] ** 0.5) < 1.5


def test_help_and_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "--skip-peer" in capsys.readouterr().out
    defaults = parse_args([])
    assert (defaults.size_gb, defaults.shard_gb, defaults.schemes) == (4.2, 1.0, list(DEFAULT_SCHEMES))
    args = parse_args(
        ["--size-gb", "0.2", "--schemes", "fp8-block", "--workers", "1", "--keep", "--skip-peer"]
    )
    assert (args.size_gb, args.schemes, args.workers, args.keep, args.skip_peer) == (
        0.2,
        ["fp8-block"],
        1,
        True,
        True,
    )
    for bad in (["--schemes", ","], ["--workers", "0"], ["--size-gb", "-1"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def _checkpoint(
    path: Path, tensors: dict[str, torch.Tensor], quantization_config: dict | None = None
) -> Path:
    path.mkdir()
    save_file(tensors, path / "model.safetensors")
    config = {"quantization_config": quantization_config} if quantization_config else {}
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_compare_checkpoints(tmp_path: Path) -> None:
    packed = torch.randint(-(2**31), 2**31 - 1, (8, 4), dtype=torch.int32)
    fp8 = torch.randn(4, 8).to(torch.float8_e4m3fn)
    scale = torch.rand(8, 1, dtype=torch.bfloat16)
    base = {"a.weight_packed": packed, "a.weight_scale": scale, "b.weight": fp8}
    a = _checkpoint(tmp_path / "a", base, {"format": "pack-quantized"})
    same = compare_checkpoints(
        a,
        _checkpoint(tmp_path / "same", {k: v.clone() for k, v in base.items()}, {"format": "pack-quantized"}),
    )
    assert same.tensors_equal and same.tensors_compared == 3 and not same.config_differences

    flipped = packed.clone()
    flipped[3, 2] ^= 1
    changed = base | {
        "a.weight_packed": flipped,
        "b.weight": fp8.float().to(torch.bfloat16),
        "c.extra": scale,
    }
    del changed["a.weight_scale"]
    other = compare_checkpoints(a, _checkpoint(tmp_path / "other", changed, {"format": "float-quantized"}))
    assert not other.tensors_equal
    assert other.only_in_a == ["a.weight_scale"] and other.only_in_b == ["c.extra"]
    assert other.mismatched["a.weight_packed"] == "1 of 32 elements differ"
    assert other.mismatched["b.weight"].startswith("dtype torch.float8_e4m3fn")
    assert other.config_differences == {"format": ("pack-quantized", "float-quantized")}
    assert "a.weight_packed" in other.summary()


def test_run_measured_sees_the_child_memory(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import time; x = b'x' * 150_000_000; time.sleep(0.5)"]
    measured = run_measured(command, tmp_path / "child.log")
    assert measured.returncode == 0
    assert measured.peak_rss_bytes >= 150_000_000
    assert measured.max_process_hwm_bytes >= 150_000_000 and measured.processes == 1
    assert measured.wall_s >= 0.5 and measured.durable_s >= measured.wall_s
    assert 0 < measured.cpu_s < measured.wall_s  # the child's CPU time, not its sleep


def test_marginal_throughput_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench/quantize_marginal.py at two tiny sizes, quantgate only: both runs complete, slopes follow from them."""
    from quantize_marginal import main as marginal_main

    out = tmp_path / "marginal.json"
    argv = ["--sizes-gb", "0.02,0.04", "--json", str(out), "--skip-peer", "--schemes", "kimi-k2-thinking-int4"]
    argv += ["--record", str(tmp_path / "recorded")]
    assert marginal_main([*argv, "--shard-gb", "0.01", "--workers", "1", "--workdir", str(tmp_path)]) == 0
    found = json.loads(out.read_text())
    small, large = found["runs"]
    assert small["source"]["bytes"] < large["source"]["bytes"]
    run_a, run_b = (r["schemes"][0]["runs"]["quantgate"] for r in (small, large))
    extra_gb = (large["source"]["bytes"] - small["source"]["bytes"]) / 1e9
    entry = found["marginal"]["kimi-k2-thinking-int4"]
    assert entry["s_per_extra_gb"]["quantgate"] == pytest.approx((run_b["durable_s"] - run_a["durable_s"]) / extra_gb)
    assert "speedup_vs_llmcompressor" not in entry  # no peer ran
    assert "marginal quantgate / disk limit" in capsys.readouterr().out
    assert not list(tmp_path.glob("quantgate-bench-*"))  # temporary checkpoints removed
    recorded = (tmp_path / "recorded" / "quantize_marginal.md").read_text()
    cells = (run_a["durable_s"], run_b["durable_s"], entry["s_per_extra_gb"]["quantgate"])
    assert "| kimi-k2-thinking-int4 | quantgate | {:.1f} | {:.1f} | {:.2f} |".format(*cells) in recorded


def test_fp8_option_writes_the_release_layout(tmp_path: Path) -> None:
    summary = make_checkpoint(tmp_path / "fp8", 0.003, 0.001, fp8=True)
    source = load_source(tmp_path / "fp8")
    assert source.fp8 is not None and source.fp8.weight_block_size == (128, 128)
    fp8_weights = {name for name, info in source.tensors.items() if info.dtype == "F8_E4M3"}
    assert fp8_weights == set(source.scales) and any(".mlp.experts." in name for name in fp8_weights)
    assert source.tensors["lm_head.weight"].dtype == "BF16" and summary["shards"] > 1
    assert all(source.tensors[w].shard == s.shard for w, s in source.scales.items())  # each beside its weight
