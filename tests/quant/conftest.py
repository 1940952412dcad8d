"""Quantized checkpoints of the bundled model, built once per session, and its BF16 logits."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from quant.build import Outcome, QuantizeRequest, quantize
from quant.schemes import get_scheme

PROMPT_IDS = torch.tensor([[5, 17, 123, 404, 77, 1024, 9, 300, 2000, 64, 11, 1500]])  # [1, T]


def forward_logits(path: Path) -> torch.Tensor:
    """float32 logits on PROMPT_IDS; compressed weights are decompressed, then upcast by hand (exact)."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        model(PROMPT_IDS[:, :1])  # the first forward decompresses compressed-tensors modules
    for parameter in model.parameters():
        parameter.data = parameter.data.float()
    with torch.no_grad():
        return model(PROMPT_IDS).logits  # [1, T, V]


@pytest.fixture(scope="session")
def model_copy(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the bundled model, so that outputs beside it stay in the test's tmp dir."""
    target = tmp_path_factory.mktemp("src") / bundled_model.name
    shutil.copytree(bundled_model, target)
    return target


@pytest.fixture(scope="session")
def built(model_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Outcome]:
    """scheme name -> the checkpoint quantized with it (built on first use, then cached)."""
    root = tmp_path_factory.mktemp("quantized")
    cache: dict[str, Outcome] = {}

    def build(name: str) -> Outcome:
        if name not in cache:
            cache[name] = quantize(QuantizeRequest(model_copy, get_scheme(name), output_root=root))
        return cache[name]

    return build


@pytest.fixture(scope="session")
def logits_of() -> Callable[[Path], torch.Tensor]:
    return forward_logits


@pytest.fixture(scope="session")
def baseline_logits(model_copy: Path) -> torch.Tensor:
    return forward_logits(model_copy)
