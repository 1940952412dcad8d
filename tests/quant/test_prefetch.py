"""quant.prefetch: the source's shards hashed ahead of the quantizer, in child processes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from quant.prefetch import SourceHasher, shard_order, source_shards, start_hasher
from quantgate.core.checkpoint import sha256_file
from quantgate.core.errors import InputError


@pytest.fixture
def shards(model_copy: Path, tmp_path: Path) -> list[Path]:
    """Copies of the bundled model's shards, each also with 1 and 2 bytes more: files of different sizes."""
    files = []
    for path in source_shards(model_copy):
        for extra in range(3):
            copy = tmp_path / f"{path.stem}-{extra}.safetensors"
            shutil.copyfile(path, copy)
            with copy.open("ab") as handle:
                handle.write(b"x" * extra)
            files.append(copy)
    return files


@pytest.mark.parametrize("processes", [1, 2])
def test_hashes_equal_sha256_of_each_file(shards, processes):
    hasher = SourceHasher(shards, processes=processes)
    try:
        assert {p: hasher.sha256(p) for p in shards} == {p: sha256_file(p) for p in shards}
    finally:
        hasher.close()
    assert all(child.poll() is not None for child in hasher._children)  # no process left behind


def test_order_is_largest_first(shards):
    sizes = [p.stat().st_size for p in shard_order(shards)]
    assert sizes == sorted(sizes, reverse=True)


def test_tiny_lookahead_in_any_collection_order(shards):
    """One shard in flight at a time; asking for the last shard first must not deadlock."""
    hasher = SourceHasher(shards, processes=2, lookahead=1)
    try:
        for path in reversed(hasher.order):
            assert hasher.sha256(path) == sha256_file(path)
    finally:
        hasher.close()


def test_a_shard_changed_after_hashing_is_refused(shards):
    hasher = SourceHasher(shards, processes=1)
    try:
        target = hasher.order[0]
        while target not in hasher._results:  # hashed, not yet collected
            time.sleep(0.01)
        with target.open("ab") as handle:
            handle.write(b"!")
        with pytest.raises(InputError, match=f"{target.name}: changed while being quantized"):
            hasher.sha256(target)
    finally:
        hasher.close()


def test_a_shard_gone_before_it_is_read_is_named(shards):
    hasher = SourceHasher(shards, processes=1, lookahead=1)  # the smallest shard is read last
    try:
        victim = hasher.order[-1]
        victim.unlink()
        with pytest.raises(InputError, match=f"{victim.name}: cannot be read"):
            hasher.sha256(victim)
    finally:
        hasher.close()


def test_close_stops_children_mid_hash(model_copy):
    hasher = start_hasher(model_copy, workers=4)
    hasher.close()  # at once, whatever the children are doing
    assert all(child.poll() is not None for child in hasher._children)
    assert not any(thread.is_alive() for thread in hasher._threads)
