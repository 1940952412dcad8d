"""Cheap checkpoint identity: per-file sha256 hashed once, then reused while path, size, mtime and
inode are unchanged; the Hub's LFS sha256 from a cache blob's name; full hashing with verify."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from quantgate.core.checkpoint import checkpoint_identity, sha256_file
from quantgate.core.file_hashes import FileHashes


@pytest.fixture
def checkpoint(bundled_model: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(bundled_model, target)
    return target


def test_hashed_once_then_taken_from_the_cache(checkpoint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hashes.json"
    first = checkpoint_identity(checkpoint, cache_file=cache)
    assert first == checkpoint_identity(checkpoint, verify=True, cache_file=tmp_path / "other.json")
    entries = json.loads(cache.read_text())["files"]
    shard = checkpoint / "model-00001-of-00002.safetensors"
    assert entries[str(shard)]["sha256"] == sha256_file(shard)
    assert set(entries[str(shard)]) == {"sha256", "size", "mtime_ns", "inode"}

    # the same bytes under a forged cache entry: the cache is trusted while the key holds ...
    entries[str(shard)]["sha256"] = "0" * 64
    cache.write_text(json.dumps({"version": 1, "files": entries}))
    assert checkpoint_identity(checkpoint, cache_file=cache) != first
    # ... verify hashes in full and repairs the cache
    assert checkpoint_identity(checkpoint, verify=True, cache_file=cache) == first
    assert checkpoint_identity(checkpoint, cache_file=cache) == first


def test_a_changed_file_is_hashed_again(checkpoint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hashes.json"
    first = checkpoint_identity(checkpoint, cache_file=cache)
    config = checkpoint / "config.json"
    config.write_text(config.read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    second = checkpoint_identity(checkpoint, cache_file=cache)
    assert second != first
    assert second == checkpoint_identity(checkpoint, verify=True, cache_file=tmp_path / "fresh.json")
    stat = config.stat()  # same size, content changed, mtime put back: only the inode can tell ...
    replaced = checkpoint / "config.json.new"
    replaced.write_text(config.read_text().replace("1e-05", "2e-05"))
    os.utime(replaced, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replaced.replace(config)  # ... a new inode
    assert checkpoint_identity(checkpoint, cache_file=cache) not in (first, second)


def test_a_hub_cache_blob_is_named_by_its_sha256(tmp_path: Path) -> None:
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    content = b"x" * 100
    blob = blobs / hashlib.sha256(content).hexdigest()
    blob.write_bytes(content)
    (snapshot / "model.safetensors").symlink_to(blob)
    hashes = FileHashes(tmp_path / "hashes.json")
    assert hashes.sha256(snapshot / "model.safetensors") == blob.name
    blob.write_bytes(b"y" * 100)  # a corrupted blob: only verify reads it
    assert hashes.sha256(snapshot / "model.safetensors") == blob.name
    assert FileHashes(tmp_path / "hashes.json", verify=True).sha256(snapshot / "model.safetensors") != blob.name


def test_an_unreadable_cache_starts_afresh(checkpoint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hashes.json"
    cache.write_text("{not json")
    identity = checkpoint_identity(checkpoint, cache_file=cache)
    assert identity == checkpoint_identity(checkpoint, verify=True, cache_file=tmp_path / "fresh.json")
    assert json.loads(cache.read_text())["version"] == 1
