"""The endpoint path with a quantized variant on vLLM CPU: vLLM CPU cannot run pack-quantized DeepSeek-V3 MoE,
so the kimi-k2-thinking-int4 variant is dequantized to BF16 (compressed-tensors' decompressor) and served;
its numbers match the quantized checkpoint run in-process, and its latency is labelled as not the kernel's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.openai import Endpoint, OpenAIBackend
from harness.serve import ServeConfig, VllmServer
from harness.suites.base import suite_kind
from harness.suites.perplexity import PerplexityConfig
from harness.suites.serving_latency import ServingLatencyConfig
from quant.dequantize import dequantize_checkpoint

HELDOUT = Path(__file__).resolve().parents[3] / "suites" / "data" / "tinyk2" / "heldout_text.jsonl"


@pytest.fixture(scope="module")
def dequantized_endpoint(vllm_python: Path, variant_dir, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    folder = tmp_path_factory.mktemp("dequantized")
    plain = dequantize_checkpoint(variant_dir("kimi-k2-thinking-int4"), folder / "int4-bf16")
    config = ServeConfig(model=plain, python=vllm_python, dtype="float32", log=folder / "server.log")
    with VllmServer(config) as server:
        yield Endpoint(server.url, plain.name, plain)


def test_dequantized_variant_served_matches_the_quantized_checkpoint(
    dequantized_endpoint: Endpoint, backend, tmp_path: Path
) -> None:
    config = PerplexityConfig(
        name="ppl", kind="perplexity", version=1, data=HELDOUT, context_length=48, stride=48, top_k=16,
        batch_size=8, max_documents=6,
    )
    kind = suite_kind("perplexity")
    in_process = kind.measure(config, backend("kimi-k2-thinking-int4"), tmp_path / "hf")
    endpoint = OpenAIBackend(dequantized_endpoint, journal=tmp_path / "journal.jsonl")
    served = kind.measure_against(config, endpoint, tmp_path / "served", in_process)
    compared = {m.name: m.value for m in kind.compare(config, served, in_process)}
    assert abs(served.metrics[0].value / in_process.metrics[0].value - 1) < 0.005
    assert compared["kl_mean"] < 1e-3

    latency = ServingLatencyConfig(
        name="lat", kind="serving_latency", version=1, concurrency=[2], prompt_lengths=[8], output_tokens=4,
        requests=2, warmup=0,
    )
    measured = suite_kind("serving_latency").measure(latency, endpoint, tmp_path / "lat")
    assert "NOT the quantized kernel's latency" in measured.extra["kernel"]
