"""kill -9 in the middle of quantize: the rerun removes the dead run's temporary folder and writes a
checkpoint byte-identical to an uninterrupted build (the nightly's kill and resume is in
tests/quantgate/nightly/test_nightly.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from quantgate.core.manifest import load_manifest

KILL_DEADLINE_S = 120


def test_quantize_killed_mid_write_reruns_byte_identical(run_cli, bundled_model: Path, tmp_path: Path):
    out = tmp_path / "killed" / "out"
    out.parent.mkdir()
    argv = ["quantize", "--model", bundled_model, "--scheme", "w4a16-g128", "--out", out, "--workers", "1"]
    child = subprocess.Popen([sys.executable, "-m", "quantgate", *map(str, argv)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    scratch = out.parent / f".out.tmp-{child.pid}"
    deadline = time.monotonic() + KILL_DEADLINE_S
    while not any(scratch.glob("*.safetensors")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert scratch.exists() and not out.exists(), "killed too late: nothing was left half-written"

    assert run_cli(argv).code == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # the dead run's folder is gone
    clean = tmp_path / "clean" / "out"
    assert run_cli([*argv[:-3], clean, "--workers", "1"]).code == 0
    assert load_manifest(out).files == load_manifest(clean).files
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes() for p in clean.iterdir()}
