"""Bad checkpoints and quantize options, one per case: each writes its bad files under a test folder and
gives the argv and what the one-line error must name. `make(tmp, src)`: tmp is the test's folder, src a
private copy of the bundled model (tests/adversarial/conftest.py)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

INDEX = "model.safetensors.index.json"
SHARD_1 = "model-00001-of-00002.safetensors"
SHARD_2 = "model-00002-of-00002.safetensors"
EXPERT = "model.layers.1.mlp.experts.0.down_proj.weight"


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path, Path], tuple[list, list[str]]]  # -> (argv, names the error line must hold)


def quantize(src: Path, tmp: Path, *extra: object) -> list:
    return ["quantize", "--model", src, "--scheme", "w4a16-g128", "--out", tmp / "out", *extra]


def _index(src: Path) -> dict:
    return json.loads((src / INDEX).read_text())


def _write_index(src: Path, index: object) -> None:
    (src / INDEX).write_text(json.dumps(index))


def _reshard(src: Path, old: str, new: str) -> None:
    index = _index(src)
    index["weight_map"] = {k: (new if v == old else v) for k, v in index["weight_map"].items()}
    _write_index(src, index)


def _first_tensor(src: Path, shard: str) -> str:
    return sorted(k for k, v in _index(src)["weight_map"].items() if v == shard)[0]


def on_source(mutate: Callable[[Path, Path], object], *names: str, extra: tuple = ()) -> Callable:
    """A case that spoils the source copy with `mutate(tmp, src)` and quantizes it; `names` are
    formatted with tmp and src ("{src}/config.json")."""

    def make(tmp: Path, src: Path) -> tuple[list, list[str]]:
        mutate(tmp, src)
        return quantize(src, tmp, *extra), [n.format(tmp=tmp, src=src) for n in names]

    return make


def shard_named(bad: str) -> Callable[[Path, Path], None]:
    """Every tensor of the second shard placed in `bad` (a victim file waits at tmp/victim.safetensors)."""

    def mutate(tmp: Path, src: Path) -> None:
        (tmp / "victim.safetensors").write_bytes((src / SHARD_2).read_bytes())
        _reshard(src, SHARD_2, bad.format(tmp=tmp))

    return mutate


def write(name: str, content: str | bytes) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        path = src / name
        if path.is_dir():
            path.rmdir()
        path.unlink(missing_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return mutate


def make_directory(name: str) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        (src / name).unlink()
        (src / name).mkdir()

    return mutate


def remove(name: str) -> Callable[[Path, Path], None]:
    return lambda tmp, src: (src / name).unlink()


def edit_config(**changes: object) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        config = json.loads((src / "config.json").read_text()) | changes
        (src / "config.json").write_text(json.dumps(config))

    return mutate


def replace_tensor(name: str, value: Callable[[], object]) -> Callable[[Path, Path], None]:
    """Rewrite the shard holding `name` with that tensor replaced by `value()` (a torch tensor)."""

    def mutate(tmp: Path, src: Path) -> None:
        from safetensors.torch import load_file, save_file

        shard = src / _index(src)["weight_map"][name]
        tensors = load_file(shard)
        tensors[name] = value()
        save_file(tensors, shard, metadata={"format": "pt"})

    return mutate


def shard_bytes(transform: Callable[[bytes], bytes]) -> Callable[[Path, Path], None]:
    return lambda tmp, src: (src / SHARD_1).write_bytes(transform((src / SHARD_1).read_bytes()))


def index_value(value: object) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        index = _index(src)
        index["weight_map"][_first_tensor(src, SHARD_1)] = value
        _write_index(src, index)

    return mutate


def ghost_tensor(tmp: Path, src: Path) -> None:
    index = _index(src)
    index["weight_map"]["model.layers.9.ghost.weight"] = SHARD_1
    _write_index(src, index)


def unindexed_tensor(tmp: Path, src: Path) -> None:
    index = _index(src)
    del index["weight_map"]["lm_head.weight"]
    _write_index(src, index)


IDX, CFG, SH1, SH2 = "{src}/" + INDEX, "{src}/config.json", "{src}/" + SHARD_1, "{src}/" + SHARD_2

QUANTIZE_SOURCE = [
    Case("index-dotdot-shard", on_source(shard_named("../victim.safetensors"), IDX, "weight_map.")),
    Case("index-absolute-shard", on_source(shard_named("{tmp}/victim.safetensors"), IDX, "weight_map.")),
    Case("index-parent-only", on_source(shard_named(".."), IDX, "weight_map.")),
    Case("index-dot", on_source(shard_named("."), IDX, "weight_map.")),
    Case("index-subfolder-shard", on_source(shard_named("sub/x.safetensors"), IDX, "weight_map.")),
    Case("index-backslash-shard", on_source(shard_named("..\\victim.safetensors"), IDX, "weight_map.")),
    Case("index-empty-shard-name", on_source(shard_named(""), IDX, "weight_map.")),
    Case("index-control-char-shard", on_source(shard_named("x\n.safetensors"), IDX, "weight_map.")),
    Case("index-number-shard", on_source(index_value(7), IDX, "weight_map.")),
    Case("index-null-shard", on_source(index_value(None), IDX, "weight_map.")),
    Case("index-list", on_source(write(INDEX, "[]"), IDX)),
    Case("index-not-json", on_source(write(INDEX, "{weight_map: "), IDX)),
    Case("index-no-weight-map", on_source(write(INDEX, '{"metadata": {}}'), IDX, "weight_map")),
    Case("index-empty-weight-map", on_source(write(INDEX, '{"weight_map": {}}'), IDX, "weight_map")),
    Case("index-weight-map-list", on_source(write(INDEX, '{"weight_map": ["a"]}'), IDX, "weight_map")),
    Case("index-not-utf8", on_source(write(INDEX, b"\xff\xfe{"), IDX)),
    Case("index-missing", on_source(remove(INDEX), IDX)),
    Case("index-directory", on_source(make_directory(INDEX), IDX)),
    Case("shard-missing", on_source(remove(SHARD_2), SH2)),
    Case("shard-truncated", on_source(shard_bytes(lambda data: data[: len(data) // 2]), SH1)),
    Case("shard-padded", on_source(shard_bytes(lambda data: data + b"\0" * 64), SH1)),
    Case("shard-garbage", on_source(shard_bytes(lambda data: b"not a safetensors file at all"), SH1)),
    Case("shard-header-too-long", on_source(shard_bytes(lambda data: struct.pack("<Q", 1 << 40) + data[8:]), SH1)),
    Case("shard-empty", on_source(shard_bytes(lambda data: b""), SH1)),
    Case("shard-directory", on_source(make_directory(SHARD_1), SH1)),
    Case("index-names-absent-tensor", on_source(ghost_tensor, "model.layers.9.ghost.weight")),
    Case("shard-holds-unindexed-tensor", on_source(unindexed_tensor, "lm_head.weight")),
    Case("config-list", on_source(write("config.json", "[1, 2]"), CFG)),
    Case("config-not-json", on_source(write("config.json", "{"), CFG)),
    Case("config-not-utf8", on_source(write("config.json", b"\xff{}"), CFG)),
    Case("config-missing", on_source(remove("config.json"), CFG)),
    Case("config-directory", on_source(make_directory("config.json"), CFG)),
    Case("config-quantization-string", on_source(edit_config(quantization_config="fp8"), CFG, "quantization_config")),
    Case("config-already-quantized", on_source(
        edit_config(quantization_config={"quant_method": "compressed-tensors"}), CFG, "quantization_config")),
    Case("tensor-int64-expert", on_source(replace_tensor(EXPERT, lambda: torch.zeros(128, 128, dtype=torch.int64)),
                                          EXPERT, "I64")),
    Case("tensor-bool-expert", on_source(replace_tensor(EXPERT, lambda: torch.zeros(128, 128, dtype=torch.bool)),
                                         EXPERT, "BOOL")),
    Case("tensor-1d-expert", on_source(replace_tensor(EXPERT, lambda: torch.zeros(128, dtype=torch.bfloat16)),
                                       EXPERT, "2-D")),
    Case("tensor-nan-expert", on_source(replace_tensor(EXPERT, lambda: torch.full((128, 128), float("nan"))
                                                       .bfloat16()), EXPERT)),
    Case("tensor-inf-expert", on_source(replace_tensor(EXPERT, lambda: torch.full((128, 128), float("inf"))
                                                       .bfloat16()), EXPERT)),
    Case("tensor-already-packed", on_source(replace_tensor(EXPERT, lambda: torch.zeros(128, 16, dtype=torch.int32)),
                                            EXPERT, "already quantized")),
    Case("gptq-index-dotdot-shard", on_source(
        shard_named("../victim.safetensors"), IDX, "weight_map.", extra=("--method", "gptq"))),
    Case("gptq-index-absolute-shard", on_source(
        shard_named("{tmp}/victim.safetensors"), IDX, "weight_map.", extra=("--method", "gptq"))),
]


# -- quantize options ------------------------------------------------------------------------------


def _out_under_file(tmp: Path, src: Path) -> tuple[list, list[str]]:
    (tmp / "a-file").write_text("x")
    return ["quantize", "--model", src, "--scheme", "w4a16-g128", "--out", tmp / "a-file" / "out"], ["a-file"]


def _out_is_file(tmp: Path, src: Path) -> tuple[list, list[str]]:
    (tmp / "a-file").write_text("x")
    return ["quantize", "--model", src, "--scheme", "w4a16-g128", "--out", tmp / "a-file"], ["a-file"]


def _out_foreign_folder(tmp: Path, src: Path) -> tuple[list, list[str]]:
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("the user's")
    return quantize(src, tmp), [str(tmp / "out")]


QUANTIZE_OPTIONS = [
    Case("quantize-out-under-a-file", _out_under_file),
    Case("quantize-out-is-a-file", _out_is_file),
    Case("quantize-out-foreign-folder", _out_foreign_folder),
    Case("quantize-workers-zero", lambda tmp, src: (quantize(src, tmp, "--workers", "0"), ["--workers"])),
    Case("quantize-unknown-scheme", lambda tmp, src: (
        ["quantize", "--model", src, "--scheme", "w5a16", "--out", tmp / "out"], ["w5a16"])),
    Case("quantize-model-missing", lambda tmp, src: (quantize(tmp / "nowhere", tmp), ["nowhere"])),
    Case("quantize-model-is-file", lambda tmp, src: (quantize(src / "config.json", tmp), ["config.json"])),
]
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128, "num_hidden_layers": 4}
ARCHITECTURE = [
    Case("config-empty-object", on_source(write("config.json", "{}"), CFG, "model_type")),
    Case("config-llama-over-moe-tensors", on_source(write("config.json", json.dumps(LLAMA)), CFG, "n_routed_experts")),
    Case("config-too-few-layers", on_source(edit_config(num_hidden_layers=2), CFG, "num_hidden_layers")),
    Case("config-too-few-experts", on_source(edit_config(n_routed_experts=8), CFG, "n_routed_experts")),
    Case("config-layers-a-string", on_source(edit_config(num_hidden_layers="4"), CFG, "num_hidden_layers")),
]



def link_outside(name: str) -> Callable[[Path, Path], None]:
    def mutate(tmp: Path, src: Path) -> None:
        secret = tmp / "home" / "secret.txt"
        secret.parent.mkdir()
        secret.write_text("private")
        (src / name).unlink(missing_ok=True)
        (src / name).symlink_to(secret)

    return mutate


LINKS = [
    Case("side-file-links-outside", on_source(link_outside("tokenizer_config.json"), "{src}/tokenizer_config.json",
                                              "outside the checkpoint")),
    Case("extra-file-links-outside", on_source(link_outside("notes.md"), "{src}/notes.md", "outside the checkpoint")),
]

CASES = QUANTIZE_SOURCE + QUANTIZE_OPTIONS + ARCHITECTURE + LINKS
