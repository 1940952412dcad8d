"""One real nightly of a small plan (tests/nightly/data/plan.yaml: the bundled model, a 4-bit variant,
a 2-bit canary, the four suite kinds on few inputs), logged to a real `mlflow server`.

It is killed once midway and resumed, so that the tests of resuming, re-running, the outbox and
shards all read the same measured results (measured once per session).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PLAN = Path(__file__).parent / "data" / "plan.yaml"
KILL_DEADLINE_S = 600


@dataclass(frozen=True)
class NightlyEnv:
    root: Path
    server: str

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        return env | {"QUANTGATE_STATE_DIR": str(self.state), "QUANTGATE_CACHE": str(self.root / "cache")}

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "quantgate.cli", *args]

    def nightly_args(self, nightly_id: str, *extra: str, tracking_uri: str | None = None) -> list[str]:
        return self.command(
            "nightly", "--plan", str(PLAN), "--reports", str(self.reports), "--nightly-id", nightly_id,
            "--tracking-uri", tracking_uri or self.server, *extra,
        )

    def run(self, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, env=self.env(), timeout=900)


@dataclass(frozen=True)
class FirstNightly:
    env: NightlyEnv
    killed_after: list[Path]  # result folders finished when the first attempt was killed
    resumed: subprocess.CompletedProcess


def finished_pairs(state: Path) -> list[Path]:
    return sorted(p.parent for p in (state / "results").rglob("summary.json") if ".scratch" not in str(p))


@pytest.fixture(scope="session")
def first_nightly(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> FirstNightly:
    env = NightlyEnv(tmp_path_factory.mktemp("nightly"), mlflow_server)
    attempt = subprocess.Popen(
        env.nightly_args("n1"), env=env.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + KILL_DEADLINE_S
    while len(finished_pairs(env.state)) < 2:  # kill it once two pairs are finished
        assert attempt.poll() is None, "the nightly ended before it could be killed"
        assert time.monotonic() < deadline, "no pair finished in time"
        time.sleep(0.2)
    os.killpg(attempt.pid, signal.SIGKILL)
    attempt.wait()
    killed_after = finished_pairs(env.state)
    resumed = env.run(env.nightly_args("n1"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    return FirstNightly(env, killed_after, resumed)
