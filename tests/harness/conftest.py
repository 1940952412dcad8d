"""Harness test fixtures: one loaded bundled model (float32, the whole toolcall suite in one batch),
RTN variants of it, and small suite files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.backends.hf import HFBackend
from quant.build import QuantizeRequest, quantize
from quant.schemes import get_scheme


@pytest.fixture(scope="session")
def bundled_backend(bundled_model) -> HFBackend:
    return HFBackend(bundled_model, dtype="float32", threads=2, batch_size=64)


# -- measured checkpoints and suite files for the perplexity / latency / eval tests ----------------

HELDOUT = Path(__file__).resolve().parents[2] / "suites" / "data" / "tinyk2" / "heldout_text.jsonl"
SMALL_PERPLEXITY = dict(  # two windows for most held-out documents, 24 documents, top-16 kept
    kind="perplexity", version=1, data=HELDOUT, context_length=48, stride=48, top_k=16, batch_size=8,
    max_documents=24,
)
SMALL_LATENCY = dict(
    kind="latency", version=1, batch_sizes="[1, 2]", prompt_lengths="[16]", decode_tokens=4, warmup=1,
    repeats=2,
)


def write_suite(path: Path, fields: dict) -> Path:
    """A suite YAML file, one `key: value` line per field (values must be YAML literals)."""
    path.write_text("".join(f"{key}: {'null' if v is None else v}\n" for key, v in fields.items()))
    return path


@pytest.fixture
def perplexity_suite(tmp_path: Path) -> Callable[..., Path]:
    """(file name, **overrides) -> a small perplexity suite file in the test's tmp dir."""
    return lambda name="ppl.yaml", **overrides: write_suite(tmp_path / name, SMALL_PERPLEXITY | overrides)


@pytest.fixture
def latency_suite(tmp_path: Path) -> Path:
    return write_suite(tmp_path / "lat.yaml", SMALL_LATENCY)


@pytest.fixture(scope="session")
def variant_dir(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """scheme name -> the bundled model quantized with it by `quant` (built once per session)."""
    root = tmp_path_factory.mktemp("variants")
    built: dict[str, Path] = {}

    def build(scheme: str) -> Path:
        if scheme not in built:
            request = QuantizeRequest(bundled_model, get_scheme(scheme), output_root=root)
            built[scheme] = quantize(request).path
        return built[scheme]

    return build


@pytest.fixture(scope="session")
def backend(
    request: pytest.FixtureRequest, variant_dir: Callable[[str], Path]
) -> Callable[[str], HFBackend]:
    """"bf16" (the shared `bundled_backend`) or a scheme name -> one HFBackend per checkpoint per session."""
    loaded: dict[str, HFBackend] = {}

    def load(name: str) -> HFBackend:
        if name not in loaded:
            if name == "bf16":
                loaded[name] = request.getfixturevalue("bundled_backend")
            else:
                loaded[name] = HFBackend(variant_dir(name), dtype="float32", threads=2, batch_size=8)
        return loaded[name]

    return load
