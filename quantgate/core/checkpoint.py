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


def checkpoint_identity(model_dir: Path, verify: bool = False, cache_file: Path | None = None) -> str:
    """sha256 of the manifest (it lists every file's sha256), else of config, index and shards
    (per-file hashes from the file-hash cache unless `verify`)."""
    from quantgate.core.file_hashes import FileHashes  # it hashes with sha256_file, from this module

    if (model_dir / MANIFEST_NAME).is_file():
        return "manifest:" + sha256_file(model_dir / MANIFEST_NAME)
    hashes = FileHashes(cache_file, verify=verify)
    digest = hashlib.sha256()
    for path in (
        sorted(model_dir.glob("*.safetensors"))
        + [model_dir / "config.json"]
        + sorted(model_dir.glob("*.safetensors.index.json"))
    ):
        digest.update(f"{path.name}:{hashes.sha256(path)}\n".encode())
    hashes.save()
    return "files:" + digest.hexdigest()


def safetensors_header(shard: Path) -> dict:
    """A safetensors file's JSON header (tensor name -> dtype, shape, offsets), read without its data."""
    with shard.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return json.loads(handle.read(size))


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
