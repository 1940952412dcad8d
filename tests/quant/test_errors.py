"""Bad input: one line naming the file, tensor or field; exit status 2; nothing left behind."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from quantgate.cli import main

SHARD_1 = "model-00001-of-00002.safetensors"
SHARD_2 = "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"
EXPERT = "model.layers.1.mlp.experts.3.up_proj.weight"


@pytest.fixture
def work(model_copy: Path, tmp_path: Path) -> Path:
    """tmp_path holding `src`, a private copy of the bundled model to break."""
    shutil.copytree(model_copy, tmp_path / "src")
    return tmp_path


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def run_failing(argv: list[str], root: Path, capsys) -> str:
    before = listing(root)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("quantgate: error: ") and "\n" not in err
    assert listing(root) == before  # no output, no temporary directory
    return err


def quantize_src(work: Path, scheme: str = "kimi-k2-thinking-int4") -> list[str]:
    return ["quantize", "--model", str(work / "src"), "--scheme", scheme, "--out", str(work / "out")]


def shard_of(work: Path, tensor: str) -> str:
    return json.loads((work / "src" / INDEX).read_text())["weight_map"][tensor]


def test_missing_shard(work, capsys) -> None:
    (work / "src" / SHARD_2).unlink()
    assert f"{SHARD_2}: missing" in run_failing(quantize_src(work), work, capsys)


def test_index_and_shard_disagree(work, capsys) -> None:
    index = json.loads((work / "src" / INDEX).read_text())
    other = SHARD_2 if index["weight_map"][EXPERT] == SHARD_1 else SHARD_1
    index["weight_map"][EXPERT] = other  # the index now places the tensor in the wrong shard
    (work / "src" / INDEX).write_text(json.dumps(index))
    err = run_failing(quantize_src(work), work, capsys)
    assert EXPERT in err and INDEX in err and ".safetensors: " in err  # names the shard, tensor and index


def test_truncated_shard(work, capsys) -> None:
    path = work / "src" / SHARD_1
    path.write_bytes(path.read_bytes()[:-1000])
    err = run_failing(quantize_src(work), work, capsys)
    assert SHARD_1 in err and "truncated" in err


def test_corrupt_shard(work, capsys) -> None:
    path = work / "src" / SHARD_1
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32  # garbage inside the JSON header
    path.write_bytes(bytes(data))
    assert f"{SHARD_1}: not a readable safetensors file" in run_failing(quantize_src(work), work, capsys)


def test_nan_in_a_weight(work, capsys) -> None:
    shard = work / "src" / shard_of(work, EXPERT)
    tensors = load_file(shard)
    tensors[EXPERT][0, 0] = float("nan")
    save_file(tensors, shard, metadata={"format": "pt"})
    err = run_failing(quantize_src(work), work, capsys)
    assert EXPERT in err and "NaN or Inf" in err and shard.name in err


def test_inf_in_a_kept_weight(work, capsys) -> None:
    name = "model.layers.0.self_attn.o_proj.weight"  # not quantized by the Kimi scheme: still checked
    shard = work / "src" / shard_of(work, name)
    tensors = load_file(shard)
    tensors[name][1, 1] = float("inf")
    save_file(tensors, shard, metadata={"format": "pt"})
    assert name in run_failing(quantize_src(work), work, capsys)


def test_already_quantized_input(work, built, capsys) -> None:
    quantized = built("w3a16-g32").path
    argv = ["quantize", "--model", str(quantized), "--scheme", "w2a16-g32", "--out", str(work / "out")]
    err = run_failing(argv, work, capsys)
    assert "config.json: already quantized" in err


def test_already_quantized_tensors_without_config(work, capsys) -> None:
    shard = work / "src" / shard_of(work, EXPERT)
    tensors = load_file(shard)
    tensors[EXPERT] = tensors[EXPERT].to(torch.float8_e4m3fn)
    save_file(tensors, shard, metadata={"format": "pt"})
    err = run_failing(quantize_src(work), work, capsys)
    assert EXPERT in err and "already quantized" in err


def test_unknown_scheme_lists_known(work, capsys) -> None:
    err = run_failing(quantize_src(work, "int4-magic"), work, capsys)
    assert "unknown scheme 'int4-magic'" in err and "kimi-k2-thinking-int4" in err and "w8a16" in err


def test_output_exists_and_is_not_a_quantgate_checkpoint(work, capsys) -> None:
    (work / "out").mkdir()
    (work / "out" / "notes.txt").write_text("mine")
    err = run_failing(quantize_src(work), work, capsys)
    assert f"{work / 'out'}: exists and is not a quantgate checkpoint" in err
    assert (work / "out" / "notes.txt").read_text() == "mine"


def write_variants(work: Path, body: str) -> Path:
    path = work / "variants.yaml"
    path.write_text(f"version: 1\nmodel: src\noutput_root: outputs\n{body}")
    return path


def test_scheme_that_matches_no_tensor(work, capsys) -> None:
    path = write_variants(
        work, "variants:\n  - name: nothing\n    preset: W4A16\n    targets: ['re:.*nope.*']\n"
    )
    err = run_failing(["quantize", "--variants", str(path)], work, capsys)
    assert "scheme 'nothing' quantizes no tensor" in err


def test_group_size_that_does_not_divide_in_features(work, capsys) -> None:
    body = "variants:\n  - name: g48\n    preset: W4A16\n    group_size: 48\n"
    err = run_failing(["quantize", "--variants", str(write_variants(work, body))], work, capsys)
    assert re.search(r"group_size 48 does not divide in_features \d+ of model\.layers\.\S+\.weight", err)


def test_unknown_key_in_variants_file(work, capsys) -> None:
    body = "variants:\n  - name: w4\n    preset: W4A16\n    grup_size: 64\n"
    path = write_variants(work, body)
    err = run_failing(["quantize", "--variants", str(path)], work, capsys)
    assert str(path) in err and "grup_size" in err and "unknown key" in err


def test_unknown_top_level_key_in_variants_file(work, capsys) -> None:
    path = write_variants(work, "varients: []\n")
    err = run_failing(["quantize", "--variants", str(path)], work, capsys)
    assert f"{path}: unknown key 'varients'" in err
