"""Building checkpoints: default names, manifest, byte-identical reruns, reuse, workers, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quant.build import QuantizeRequest, default_output, quantize
from quant.schemes import get_scheme
from quantgate.cli import main
from quantgate.core.checkpoint import sha256_file
from quantgate.core.manifest import MANIFEST_NAME, load_manifest, verify_files

SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def directory_bytes(directory: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(directory.iterdir())}


def test_default_output_name_is_beside_the_model(model_copy: Path) -> None:
    path = default_output(model_copy, get_scheme("kimi-k2-thinking-int4"))
    assert path == model_copy.parent / f"{model_copy.name}-kimi-k2-thinking-int4-rtn"


def test_manifest_describes_the_checkpoint(built, model_copy: Path) -> None:
    outcome = built("kimi-k2-thinking-int4")
    manifest = load_manifest(outcome.path)
    assert verify_files(outcome.path, manifest) == []
    assert set(manifest.files) == {p.name for p in outcome.path.iterdir()} - {MANIFEST_NAME}
    assert manifest.total_bytes == sum(f.bytes for f in manifest.files.values())
    assert manifest.method == "rtn"
    assert manifest.source.index_sha256 == sha256_file(model_copy / "model.safetensors.index.json")
    assert manifest.source.shard_sha256 == {p.name: sha256_file(p) for p in model_copy.glob("*.safetensors")}
    config = json.loads((outcome.path / "config.json").read_text())["quantization_config"]
    assert manifest.scheme.quantization_config["config_groups"] == config["config_groups"]
    assert manifest.scheme.ignore == config["ignore"]
    assert set(manifest.tools) == {"torch", "compressed-tensors", "transformers", "safetensors"}
    assert 4.0 < manifest.bits_per_weight.quantized < 4.6  # int4 + a bf16 scale per 32
    assert manifest.bits_per_weight.quantized < manifest.bits_per_weight.overall < 16
    for name in SIDE_FILES:
        assert (outcome.path / name).read_bytes() == (model_copy / name).read_bytes()


def test_tampered_file_fails_verification(built, tmp_path: Path) -> None:
    outcome = built("w3a16-g32")
    manifest = load_manifest(outcome.path)
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in outcome.path.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "tokenizer_config.json").write_text("{}")
    assert verify_files(copy, manifest) == ["tokenizer_config.json"]


def test_two_runs_are_byte_identical_and_workers_change_nothing(built, model_copy, tmp_path, capsys) -> None:
    first = built("w4a16-g128")
    again = tmp_path / "again"
    code = main(["quantize", "--model", str(model_copy), "--scheme", "w4a16-g128", "--out", str(again),
                 "--workers", "2"])  # fmt: skip
    assert code == 0
    assert directory_bytes(again) == directory_bytes(first.path)


def test_matching_output_is_reused(built, model_copy, capsys) -> None:
    outcome = built("w2a16-g32")
    before = {p.name: p.stat().st_mtime_ns for p in outcome.path.iterdir()}
    assert (
        main(["quantize", "--model", str(model_copy), "--scheme", "w2a16-g32", "--out", str(outcome.path)])
        == 0
    )
    assert capsys.readouterr().out.startswith(f"reused {outcome.path}")
    assert {p.name: p.stat().st_mtime_ns for p in outcome.path.iterdir()} == before


def test_outdated_quantgate_output_is_rebuilt(built, model_copy, tmp_path) -> None:
    target = tmp_path / "out"
    quantize(QuantizeRequest(model_copy, get_scheme("w3a16-g32"), out=target))
    outcome = quantize(QuantizeRequest(model_copy, get_scheme("w2a16-g32"), out=target))
    assert not outcome.reused
    assert load_manifest(target).scheme.name == "w2a16-g32"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_stale_temporary_of_a_killed_run_is_cleared(model_copy, tmp_path) -> None:
    stale = tmp_path / ".out.tmp-999999999"  # no such process
    stale.mkdir()
    (stale / "model-00001-of-00002.safetensors").write_bytes(b"partial")
    quantize(QuantizeRequest(model_copy, get_scheme("w2a16-g32"), out=tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_inspect_groups_by_moe_group(built, capsys) -> None:
    outcome = built("kimi-k2-thinking-int4")
    assert main(["inspect", str(outcome.path)]) == 0
    text = capsys.readouterr().out
    assert "kimi-k2-thinking-int4 (pack-quantized, weights int4 group 32 sym)" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line[:1].isalpha()}
    assert "int4 group 32 sym" in rows["routed_experts"]
    for group in ("attention", "shared_experts", "dense_mlp", "router", "embeddings", "lm_head"):
        assert "bf16 (kept)" in rows[group]
    assert "x the BF16 shards" in text and "bits/weight" in text


@pytest.mark.parametrize("name", ["fp8-block", "w8a8-int8"])
def test_router_norms_and_embeddings_are_never_quantized(name, built) -> None:
    index = json.loads((built(name).path / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    assert "model.embed_tokens.weight" in names and "lm_head.weight" in names
    for layer in (1, 2, 3):
        assert f"model.layers.{layer}.mlp.gate.weight" in names
        assert f"model.layers.{layer}.mlp.gate.e_score_correction_bias" in names
        assert f"model.layers.{layer}.mlp.gate.weight_scale" not in names
    assert not any(n.startswith("model.embed_tokens.weight_") for n in names)
