"""Shared test set-up: everything offline, a project-local HF_HOME, the bundled model's path, and a
real `mlflow server` on 127.0.0.1 (session-scoped, sqlite backend)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
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


@pytest.fixture(scope="session")
def fp8_model(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`kimi-k2-tiny-fp8`: the bundled model in the DeepSeek/Kimi block-FP8 release layout (tinyk2.make_fp8)."""
    from tinyk2.make_fp8 import make_fp8

    return make_fp8(bundled_model, tmp_path_factory.mktemp("fp8") / "kimi-k2-tiny-fp8")


# how long the server may take to answer /health (a few seconds on an idle machine)
SERVER_START_S = float(os.environ.get("QUANTGATE_TEST_MLFLOW_START_S", "120"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (sqlite store and artifacts under `root`), in a process group."""

    root: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env |= {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
        ]  # fmt: skip
        with open(self.root / "server.log", "a") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + SERVER_START_S
        while not healthy(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"mlflow server did not come up: {(self.root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        """kill -9 of the server and its workers (the whole group)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the server and its uvicorn worker: a group of its own
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), free_port()).start()
    yield server.url
    server.stop()


@pytest.fixture
def closed_port_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound then released: nothing listens there
