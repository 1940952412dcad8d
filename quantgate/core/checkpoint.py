"""Checkpoint identity: file hashing and what names a checkpoint's contents.

A quantgate-made checkpoint is identified by its manifest (which lists every file's sha256); any
other by the sha256 of its config, index and safetensors shards, each hashed once and then taken
from the file-hash cache while the file is unchanged (quantgate.core.file_hashes); `verify=True`
hashes every file in full.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from quantgate.core.errors import InputError
from quantgate.core.paths import path_component

INDEX_NAME = "model.safetensors.index.json"
SINGLE_FILE_NAME = "model.safetensors"  # a checkpoint in one file has no index
CONFIG_NAME = "config.json"
MANIFEST_NAME = "quantgate.json"  # written by quant/ beside a checkpoint's weights (quantgate.core.manifest)
HASH_CHUNK = 1 << 24


def sha256_file(path: Path) -> str:
    """sha256 of a file, read front to back into one reused buffer."""
    view = memoryview(bytearray(HASH_CHUNK))
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := handle.readinto(view):
            digest.update(view[:n])
    return digest.hexdigest()


def read_json_object(path: Path) -> dict:
    """A JSON file holding an object (config.json, an index); anything else is an InputError naming it."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    except OSError as error:  # a directory, a parent that is a file, unreadable
        raise InputError(f"{path}: unreadable ({error.strerror})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a JSON object (got {type(data).__name__})")
    return data


def read_weight_map(model_dir: Path) -> dict[str, str]:
    """The index's tensor name -> shard file name, each shard a plain file name inside `model_dir`.

    A missing, unreadable or malformed index, or a shard name that is a path (`../x`, `/x`, `a/b`),
    is an InputError naming the index and the tensor, before any shard is opened or written.
    """
    path = model_dir / INDEX_NAME
    index = read_json_object(path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{path}: no weight_map (an object of tensor name -> shard file)")
    for name, shard in weight_map.items():
        path_component(shard, file=path, field=f"weight_map.{name}")
    return weight_map


def check_safetensors_weights(model_dir: Path) -> None:
    """The checkpoint's weights are safetensors inside `model_dir` (never pickles, never outside it).

    Sharded: the index is read and every shard name checked (`read_weight_map`). A folder holding
    only `.bin` (pickle) weights is refused with how to convert it: quantgate runs no code from data.
    """
    if (model_dir / INDEX_NAME).exists():
        read_weight_map(model_dir)
        return
    if (model_dir / SINGLE_FILE_NAME).is_file():
        return
    if any(model_dir.glob("*.bin")):
        raise InputError(
            f"{model_dir}: only .bin (pickle) weights; quantgate loads safetensors only: convert once with "
            f"transformers (AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(OUT, safe_serialization=True))"
        )
    raise InputError(f"{model_dir}: no weights ({INDEX_NAME} or {SINGLE_FILE_NAME})")


def checkpoint_identity(model_dir: Path, verify: bool = False, cache_file: Path | None = None) -> str:
    """sha256 over every file the checkpoint is read from.

    A quantgate checkpoint: its manifest (which lists every weight shard's sha256) and every other
    top-level file as it is now (tokenizer, chat template, generation config: edited after the build,
    they still change the identity). Any other checkpoint: every top-level file, weights included
    (`.safetensors`, `.bin`, config, index, tokenizer, templates). Hidden files are not read.
    Each file's sha256 comes from the file-hash cache (quantgate.core.file_hashes: reused while the
    file's path, size, mtime and inode are unchanged) unless `verify`, which hashes every file in full.
    """
    from quantgate.core.file_hashes import FileHashes  # it hashes with sha256_file, from this module

    manifest = (model_dir / MANIFEST_NAME).is_file()
    hashes = FileHashes(cache_file, verify=verify)
    digest = hashlib.sha256()
    for path in sorted(model_dir.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if manifest and path.suffix == ".safetensors":
            continue  # their sha256 is in the manifest
        digest.update(f"{path.name}:{hashes.sha256(path)}\n".encode())
    hashes.save()
    return ("manifest:" if manifest else "files:") + digest.hexdigest()


def safetensors_header(shard: Path) -> dict:
    """A safetensors file's JSON header (tensor name -> dtype, shape, offsets), read without its data."""
    with shard.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return json.loads(handle.read(size))


QUANTIZATION_PARAMS = (  # a quantized Linear's companions of its weight (compressed-tensors, block FP8)
    "weight_scale", "weight_zero_point", "weight_g_idx", "weight_shape", "weight_global_scale",
    "weight_scale_inv", "input_scale", "input_global_scale",
)  # fmt: skip


def stored_bits_per_weight(model_dir: Path) -> tuple[float | None, float]:
    """(bits stored per original weight element over the quantized modules, or None when none is;
    bits stored per original element over every tensor), from the shards themselves: what a manifest
    says of a quantgate-made checkpoint, for one made elsewhere. A packed weight counts the elements of
    its `weight_shape` (the weight it replaces); scales, zero points and shapes count as stored bits only."""
    from safetensors import safe_open

    modules: dict[str, dict[str, tuple[list[int], int, Path]]] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        for name, info in safetensors_header(shard).items():
            if name != "__metadata__":
                module, _, local = name.rpartition(".")
                start, end = info["data_offsets"]
                modules.setdefault(module, {})[local] = (info["shape"], end - start, shard)
    elements = quantized_elements = quantized_bytes = 0
    for module, tensors in modules.items():
        if "weight_packed" in tensors and "weight_shape" in tensors:
            with safe_open(tensors["weight_shape"][2], framework="pt") as handle:
                logical = math.prod(int(x) for x in handle.get_tensor(f"{module}.weight_shape").tolist())
            weight = "weight_packed"
        else:
            logical = math.prod(tensors["weight"][0]) if "weight" in tensors else 0
            weight = "weight"
        quantized = weight == "weight_packed" or any(local in tensors for local in QUANTIZATION_PARAMS)
        elements += logical + sum(
            math.prod(shape)
            for local, (shape, _, _) in tensors.items()
            if local != weight and local not in QUANTIZATION_PARAMS
        )
        if quantized:
            quantized_elements += logical
            quantized_bytes += sum(
                size for local, (_, size, _) in tensors.items() if local == weight or local in QUANTIZATION_PARAMS
            )
    total = sum(size for tensors in modules.values() for _, size, _ in tensors.values())  # tensor data, as manifests
    return (8 * quantized_bytes / quantized_elements if quantized_elements else None), 8 * total / max(elements, 1)


def stored_size(model_dir: Path) -> tuple[int, int]:
    """(bytes of the safetensors shards, tensor elements they hold)."""
    shards = sorted(model_dir.glob("*.safetensors"))
    elements = sum(
        math.prod(info["shape"])
        for shard in shards
        for name, info in safetensors_header(shard).items()
        if name != "__metadata__"
    )
    return sum(shard.stat().st_size for shard in shards), elements
