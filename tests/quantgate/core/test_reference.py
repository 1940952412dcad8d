"""Model references: a folder, its single model.safetensors, or a Hugging Face repo id resolved
through a Hugging Face cache layout (built here, offline, around the bundled model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quantgate.cli import main
from quantgate.core.checkpoint import sha256_file
from quantgate.core.errors import InputError
from quantgate.core.reference import resolve_reference

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_home(bundled_model: Path, tmp_path: Path, monkeypatch) -> Path:
    """$HF_HOME/hub/models--quantgate--kimi-k2-tiny: refs/main -> a snapshot holding the bundled model."""
    repo = tmp_path / "hf" / "hub" / "models--quantgate--kimi-k2-tiny"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    blobs = repo / "blobs"
    blobs.mkdir()
    for path in bundled_model.iterdir():  # as the Hub lays it out: snapshot files link to blobs named by sha256
        blob = blobs / sha256_file(path)
        shutil.copyfile(path, blob)
        (snapshot / path.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf"


def test_a_folder_and_its_single_file(bundled_model: Path, tmp_path: Path) -> None:
    assert resolve_reference(str(bundled_model)) == bundled_model
    single = tmp_path / "single"
    single.mkdir()
    shutil.copyfile(bundled_model / "config.json", single / "config.json")
    (single / "model.safetensors").write_bytes(b"")
    assert resolve_reference(single / "model.safetensors") == single


def test_a_repo_id_resolves_through_the_cache(hf_home: Path) -> None:
    snapshot = hf_home / "hub" / "models--quantgate--kimi-k2-tiny" / "snapshots" / COMMIT
    assert resolve_reference("quantgate/kimi-k2-tiny") == snapshot
    assert resolve_reference(f"quantgate/kimi-k2-tiny@{COMMIT}") == snapshot
    with pytest.raises(InputError, match="quantgate/kimi-k2-tiny@v2: not in the Hugging Face cache"):
        resolve_reference("quantgate/kimi-k2-tiny@v2")


def test_quantize_from_a_repo_id(hf_home: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["quantize", "--model", "quantgate/kimi-k2-tiny", "--scheme", "kimi-k2-thinking-int4",
                 "--out", str(out), "--workers", "1"]) == 0  # fmt: skip
    assert (out / "quantgate.json").is_file()


def test_a_repo_not_in_the_cache_offline_is_one_line_exit_2(hf_home: Path, tmp_path: Path, capsys) -> None:
    args = ["quantize", "--model", "moonshotai/Kimi-K2-Instruct", "--scheme", "w8a16", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "--model moonshotai/Kimi-K2-Instruct: not in the Hugging Face cache" in error
    assert "HF_HUB_OFFLINE is set" in error
    assert not (tmp_path / "o").exists()


def test_neither_a_folder_nor_a_repo_id(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such checkpoint directory, nor a Hugging Face repo id"):
        resolve_reference(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="not a checkpoint directory"):
        resolve_reference(str(tmp_path))


PLAN = """\
version: 1
name: hub-plan
model: quantgate/kimi-k2-tiny@main
variants:
  - {name: int4, scheme: kimi-k2-thinking-int4, method: rtn, group: int4}
suites: [perplexity]
gates:
  - {metric: perplexity.kl_mean, max_value: 0.05}
"""


def test_a_plan_model_may_be_a_repo_id(hf_home: Path, tmp_path: Path) -> None:
    from quantgate.plan import load_plan

    (tmp_path / "plan.yaml").write_text(PLAN)
    snapshot = hf_home / "hub" / "models--quantgate--kimi-k2-tiny" / "snapshots" / COMMIT
    assert load_plan(tmp_path / "plan.yaml", locate=True).model == snapshot
    assert load_plan(tmp_path / "plan.yaml").model == tmp_path / "quantgate" / "kimi-k2-tiny@main"  # as written
    (tmp_path / "plan.yaml").write_text(PLAN.replace("@main", "@v9"))
    with pytest.raises(InputError, match=r"plan.yaml: model: no such folder .*not in the Hugging Face cache"):
        load_plan(tmp_path / "plan.yaml", locate=True)
