"""Where MLflow lives: the tracking URI, the project-local state dir, and whether it can be reached.

Order: --tracking-uri, else MLFLOW_TRACKING_URI, else an embedded sqlite store in the state dir
(`state/mlflow.db`, artifacts under `state/mlartifacts`). The state dir is QUANTGATE_STATE_DIR or
./state. Telemetry is off; HTTP retries are short so that a server that is down is noticed in
seconds (the results then go to the outbox, tracking/outbox.py).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

HEALTH_TIMEOUT_S = 3.0
MESSAGE_CHARS = 200  # of a server's error, in a one-line message


@dataclass(frozen=True)
class TrackingStore:
    uri: str
    artifact_root: Path | None  # local artifact root (embedded store only); a server manages its own

    @property
    def is_remote(self) -> bool:
        return self.uri.startswith(("http://", "https://"))

    def artifact_location(self, experiment: str) -> str | None:
        if self.artifact_root is None:
            return None
        return (self.artifact_root / experiment.replace("/", "_")).as_uri()


def state_dir() -> Path:
    return Path(os.environ.get("QUANTGATE_STATE_DIR", "state")).resolve()


def configure_environment() -> None:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def resolve_store(tracking_uri: str | None = None) -> TrackingStore:
    configure_environment()
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return TrackingStore(uri, None)
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    return TrackingStore(f"sqlite:///{state / 'mlflow.db'}", state / "mlartifacts")


def reachable(store: TrackingStore) -> bool:
    """True for a local store; for a server, whether GET /health answers."""
    if not store.is_remote:
        return True
    try:
        with urllib.request.urlopen(store.uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def failure_reason(error: Exception) -> str:
    """One redacted line saying why the server failed a request (its first line, about 200 characters)."""
    from quantgate.core.redact import redact

    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if len(line) > MESSAGE_CHARS:  # the request at the start, the cause (e.g. "too many 503 ...") at the end
        line = f"{line[: MESSAGE_CHARS // 3]} ... {line[-(MESSAGE_CHARS - MESSAGE_CHARS // 3):]}"
    return redact(line)


def client(store: TrackingStore) -> MlflowClient:
    from mlflow import MlflowClient  # mlflow is heavy: imported only when a command talks to it

    return MlflowClient(tracking_uri=store.uri)
