"""The source checkpoint: its index, its shards, and checks that it is whole and unquantized or block FP8.

A checkpoint is a folder with config.json and either `model.safetensors.index.json` plus the
shards it names, or one `model.safetensors` and no index (what `save_pretrained` writes for
small models); the latter is read as if an index placed every tensor in that one file.

A DeepSeek/Kimi block-FP8 release (quantgate.core.fp8) is a source too: its FP8 weights are read as
the BF16 weights DeepSeek's reference conversion makes of them. `tensors` then lists every tensor
but the `weight_scale_inv` ones, which are in `scales` (by the weight they scale) and never
written out; their shapes are checked against the config's `weight_block_size` here, their
values (finite) when they are read.

Only safetensors headers are read here (memory-mapped `safe_open`); tensor data is read later,
one tensor at a time, by the shard writer.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open

from quantgate.core.checkpoint import (
    CONFIG_NAME,
    INDEX_NAME,
    SINGLE_FILE_NAME,
    read_json_object,
    read_weight_map,
    sha256_file,
)
from quantgate.core.errors import InputError
from quantgate.core.families import Family, family_of_config
from quantgate.core.fp8 import BlockFP8, block_fp8_of, split_scales

# Tensor names compressed-tensors writes for a quantized module; their presence means "already quantized".
QUANTIZED_SUFFIXES = (
    ".weight_packed",
    ".weight_scale",
    ".weight_zero_point",
    ".weight_shape",
    ".weight_global_scale",
    ".weight_scale_inv",
)


WEIGHT_DTYPES = frozenset({"BF16", "F16", "F32"})
PROJECTION = re.compile(r"_proj(_with_mqa)?\.weight$")  # a Linear layer's weight in DeepSeek-V3 / Kimi K2 names


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shard: str
    shape: tuple[int, ...]
    dtype: str  # safetensors' spelling, e.g. "BF16"


@dataclass(frozen=True)
class SourceCheckpoint:
    path: Path
    config: dict
    shards: tuple[str, ...]  # file names, sorted
    tensors: dict[str, TensorInfo]  # by tensor name
    family: Family
    single_file: bool = False  # one model.safetensors and no index file
    fp8: BlockFP8 | None = None  # a block-FP8 release (its FP8 weights are dequantized as they are read)
    scales: dict[str, TensorInfo] = field(default_factory=dict)  # FP8 weight name -> its weight_scale_inv

    def is_fp8(self, name: str) -> bool:
        return name in self.scales

    def index_sha256(self) -> str:
        """sha256 of the index file; of a canonical index (the weight map as JSON) for a single file."""
        if not self.single_file:
            return sha256_file(self.path / INDEX_NAME)
        weight_map = {name: info.shard for name, info in sorted(self.tensors.items())}
        return hashlib.sha256(json.dumps({"weight_map": weight_map}, sort_keys=True).encode()).hexdigest()

    def shard_tensors(self, shard: str) -> list[TensorInfo]:
        return sorted((t for t in self.tensors.values() if t.shard == shard), key=lambda t: t.name)


def _read_header(shard_path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape, dtype) from a shard's header; a truncated or corrupt file is an InputError."""
    size = shard_path.stat().st_size
    try:
        with safe_open(shard_path, framework="pt") as handle:
            infos = {}
            for name in handle.keys():
                tensor_slice = handle.get_slice(name)
                infos[name] = (tuple(tensor_slice.get_shape()), tensor_slice.get_dtype())
            end = _data_end(shard_path)
    except SafetensorError as error:
        raise InputError(f"{shard_path}: not a readable safetensors file ({error})") from None
    if end != size:
        raise InputError(f"{shard_path}: truncated or padded ({size} bytes, header says {end})")
    return infos


def _data_end(shard_path: Path) -> int:
    """The byte offset where the header says the data ends."""
    with shard_path.open("rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    offsets = [info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"]
    return 8 + header_len + max(offsets, default=0)


def load_source(path: Path) -> SourceCheckpoint:
    """Open a BF16 or block-FP8 checkpoint directory and check it is whole, consistent and not yet
    quantized (otherwise)."""
    if not path.is_dir():
        raise InputError(f"{path}: not a checkpoint directory")
    _check_links(path)
    config = read_json_object(path / CONFIG_NAME)  # before the index: a config that is not an object is named first
    fp8 = block_fp8_of(config, path / CONFIG_NAME)
    if "quantization_config" in config and fp8 is None:
        quantization = config["quantization_config"]
        method = quantization.get("quant_method", "unknown") if isinstance(quantization, dict) else quantization
        raise InputError(f"{path / CONFIG_NAME}: already quantized (quantization_config, {method})")
    family = family_of_config(config, path / CONFIG_NAME)
    single_file = not (path / INDEX_NAME).exists() and (path / SINGLE_FILE_NAME).is_file()
    if single_file:
        weight_map = dict.fromkeys(_read_header(path / SINGLE_FILE_NAME), SINGLE_FILE_NAME)
        if not weight_map:
            raise InputError(f"{path / SINGLE_FILE_NAME}: holds no tensor")
    else:
        weight_map = read_weight_map(path)  # every shard a plain file name inside `path`

    tensors: dict[str, TensorInfo] = {}
    shards = tuple(sorted(set(weight_map.values())))
    for shard in shards:
        shard_path = path / shard
        if not shard_path.is_file():
            raise InputError(f"{shard_path}: missing (named in {INDEX_NAME})")
        header = _read_header(shard_path)
        indexed = {name for name, owner in weight_map.items() if owner == shard}
        if missing := sorted(indexed - header.keys()):
            raise InputError(f"{shard_path}: lacks tensor {missing[0]} that {INDEX_NAME} places there")
        if extra := sorted(header.keys() - indexed):
            raise InputError(f"{shard_path}: holds tensor {extra[0]} that {INDEX_NAME} does not place there")
        for name, (shape, dtype) in header.items():
            tensors[name] = TensorInfo(name=name, shard=shard, shape=shape, dtype=dtype)

    scales = split_scales(path, fp8, tensors) if fp8 is not None else {}
    for name, info in sorted(tensors.items()):
        if name in scales:
            continue  # an FP8 weight of a block-FP8 release (checked above), read dequantized
        if name.endswith(QUANTIZED_SUFFIXES) or info.dtype.startswith(("F8", "I8", "U8", "I32")):
            raise InputError(f"{path / info.shard}: tensor {name} ({info.dtype}) is already quantized")
        if info.dtype not in WEIGHT_DTYPES:
            raise InputError(
                f"{path / info.shard}: tensor {name} has dtype {info.dtype}; a BF16 source holds "
                f"{', '.join(sorted(WEIGHT_DTYPES))} tensors"
            )
        if PROJECTION.search(name) and len(info.shape) != 2:
            raise InputError(f"{path / info.shard}: tensor {name} has shape {list(info.shape)}; a Linear weight is 2-D")
    _check_architecture(path / CONFIG_NAME, config, tensors)
    return SourceCheckpoint(
        path=path, config=config, shards=shards, tensors=tensors, family=family, single_file=single_file,
        fp8=fp8, scales=scales,
    )  # fmt: skip


def _check_links(path: Path) -> None:
    """Files are read and copied only from inside the checkpoint: a top-level link pointing elsewhere is
    refused (it would copy e.g. a file of your home folder into the output). Allowed: links inside the
    folder, and a Hugging Face cache snapshot's links into its `blobs/` folder."""
    root = path.resolve()
    blobs = root.parent.parent / "blobs" if root.parent.name == "snapshots" else None
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or not entry.is_symlink():
            continue
        target = entry.resolve()
        if not (target.is_relative_to(root) or (blobs is not None and target.is_relative_to(blobs))):
            raise InputError(
                f"{entry}: a link to {target}, outside the checkpoint; copy the file in or remove the link"
            )


LAYER = re.compile(r"^model\.layers\.(\d+)\.")
EXPERT = re.compile(r"\.(?:mlp|block_sparse_moe)\.experts\.(\d+)\.")
ROUTED_EXPERT_COUNT_KEYS = ("n_routed_experts", "num_experts", "num_local_experts")


def _check_architecture(config_path: Path, config: dict, tensors: dict[str, TensorInfo]) -> None:
    """The config describes these tensors: it names a model type, and its layer and routed-expert counts
    cover every layer and expert index the shards hold (a dense config over MoE tensors is refused)."""
    for key, kind, what in (("model_type", str, "a string"), ("num_hidden_layers", int, "an integer")):
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise InputError(f"{config_path}: {key}: missing or not {what} (the model's config keys)")
    layers = {int(m[1]) for name in tensors if (m := LAYER.match(name))}
    if layers and max(layers) >= config["num_hidden_layers"]:
        raise InputError(
            f"{config_path}: num_hidden_layers {config['num_hidden_layers']} but the shards hold layer {max(layers)}"
        )
    experts = {int(m[1]) for name in tensors if (m := EXPERT.search(name))}
    if experts:
        # the routed-expert count: DeepSeek-V3 n_routed_experts, Qwen3-MoE num_experts, Mixtral num_local_experts
        key = next((k for k in ROUTED_EXPERT_COUNT_KEYS if k in config), ROUTED_EXPERT_COUNT_KEYS[0])
        routed = config.get(key)
        if not isinstance(routed, int) or isinstance(routed, bool):
            raise InputError(
                f"{config_path}: {key}: missing, but the shards hold routed experts "
                f"(model_type {config['model_type']!r} does not describe a MoE model)"
            )
        if max(experts) >= routed:
            raise InputError(f"{config_path}: {key} {routed} but the shards hold expert {max(experts)}")


def source_hashes(source: SourceCheckpoint) -> tuple[str, dict[str, str]]:
    """sha256 of the index and of each shard: the source's identity."""
    return source.index_sha256(), {s: sha256_file(source.path / s) for s in source.shards}
