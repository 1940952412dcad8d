"""Shared test set-up: everything offline, a project-local HF_HOME, the bundled model's path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HOME", str(ROOT / ".hf_home"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    """The committed kimi-k2-tiny checkpoint (QUANTGATE_BUNDLED_MODEL overrides it while developing)."""
    path = Path(os.environ.get("QUANTGATE_BUNDLED_MODEL", ROOT / "models" / "kimi-k2-tiny"))
    assert (path / "model.safetensors.index.json").exists(), f"bundled model missing at {path}"
    return path
