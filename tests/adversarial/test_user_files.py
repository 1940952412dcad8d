"""Replacing an old output never deletes files quantgate did not write: it refuses and names them."""

from __future__ import annotations

from pathlib import Path

from tests.adversarial.conftest import tree


def test_replacing_an_old_checkpoint_keeps_the_users_files(run_cli, bundled_model: Path, tmp_path: Path):
    out = tmp_path / "out"
    assert run_cli(["quantize", "--model", bundled_model, "--scheme", "w4a16-g128", "--out", out]).code == 0
    (out / "notes.txt").write_text("mine")
    (out / "eval").mkdir()
    (out / "eval" / "scores.csv").write_text("a,b\n")
    before = tree(tmp_path)

    result = run_cli(["quantize", "--model", bundled_model, "--scheme", "w8a16", "--out", out])
    assert result.code == 2 and len(result.err) == 1
    assert "eval/scores.csv" in result.err[0] and "notes.txt" in result.err[0] and str(out) in result.err[0]
    assert tree(tmp_path) == before  # nothing deleted, nothing half-built beside it

    (out / "notes.txt").unlink()
    (out / "eval" / "scores.csv").unlink()
    (out / "eval").rmdir()
    assert run_cli(["quantize", "--model", bundled_model, "--scheme", "w8a16", "--out", out]).code == 0


def test_a_manifest_that_is_not_utf8_is_one_line(refused, tmp_path: Path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "quantgate.json").write_bytes(b"\xff\xfe{}")
    refused(["inspect", checkpoint], str(checkpoint / "quantgate.json"))


def test_a_hugging_face_cache_snapshot_with_links_into_blobs_is_read(run_cli, bundled_model: Path, tmp_path: Path):
    """The cache's layout (snapshots/REV/FILE -> ../../blobs/HASH) is not a link outside the checkpoint."""
    from quant.source import load_source

    snapshot = tmp_path / "models--x" / "snapshots" / "rev"
    snapshot.mkdir(parents=True)
    blobs = tmp_path / "models--x" / "blobs"
    blobs.mkdir()
    for file in sorted(bundled_model.iterdir()):
        (blobs / file.name).write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(Path("../../blobs") / file.name)
    assert load_source(snapshot).shards == load_source(bundled_model).shards
