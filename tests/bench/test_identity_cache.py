"""bench/identity_cache.py end to end on a small synthetic shard: a valid safetensors file, the same
identity hashed in full and from the cache, and nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from identity_cache import main, write_synthetic
from safetensors import safe_open


def test_the_synthetic_shard_is_valid_safetensors(tmp_path: Path) -> None:
    folder = write_synthetic(tmp_path / "ckpt", 1000)
    with safe_open(folder / "model.safetensors", framework="pt") as handle:
        assert handle.get_slice("blob").get_shape() == [1000]
    assert (folder / "config.json").is_file()


def test_runs_and_removes_its_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--size-gb", "0.001", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "second eval, after: cached per-file sha256" in out
    assert list(tmp_path.iterdir()) == []
