#!/usr/bin/env python3
"""The GPU path: serve the bundled model's BF16 and kimi-k2-thinking-int4 checkpoints with vLLM on an NVIDIA
GPU, run the suites through the endpoints (`openai` backend, int4 against BF16), and write the results and
the serving-latency comparison to OUT. Budget: under 10 minutes on one GPU once the environments exist.

    python3 bench/gpu_suites.py OUT [--dry-run] [--vllm-python PY] [--quantgate-python PY] [--wheelhouse DIR]

Steps (printed by --dry-run, nothing run):
  1. environments: vLLM (transformers <= 5.19 pinned by vLLM 0.32) and quantgate (transformers >= 5.24) can
     not share one, so two venvs under .bench-venvs/ unless given: `pip install vllm==VLLM_VERSION`, and
     `pip install -e .` for quantgate; `--wheelhouse DIR` installs offline (pip --no-index --find-links DIR);
  2. `quantgate quantize --scheme kimi-k2-thinking-int4` (data-free RTN, seconds) into OUT/checkpoints;
  3. `quantgate serve --device cuda` for both (served together, a fifth of GPU memory each); the int4
     checkpoint runs vLLM's compressed-tensors WNA16 MoE kernel, unlike on CPU;
  4. `quantgate eval --backend openai` int4 against the BF16 endpoint: perplexity/KL (top-64 + tail),
     benchmark (lm-eval local-completions), toolcall (chat mode, server-side kimi_k2 parsing), and
     serving_latency (TTFT, ITL, output tokens/s at concurrency 1/4/16);
  5. OUT/latency_comparison.txt: int4 / BF16 ratios per condition; OUT/summary.txt: every metric.
Servers are stopped by PID on exit. Standard library only (runs before any environment exists).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VLLM_VERSION = "0.32.0"
MODEL = ROOT / "models" / "kimi-k2-tiny"
SCHEME = "kimi-k2-thinking-int4"
SUITES = ["perplexity", "benchmark", "toolcall", "suites/serving_latency.yaml"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for checkpoints, server logs, results and the comparison")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (every command) and exit")
    parser.add_argument("--vllm-python", type=Path, help="python of an existing vLLM (GPU) environment")
    parser.add_argument("--quantgate-python", type=Path, help="python of an environment with quantgate installed")
    parser.add_argument("--wheelhouse", type=Path, help="install offline from this folder of wheels")
    parser.add_argument("--model", type=Path, default=MODEL, help="the BF16 checkpoint (default: the bundled model)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.2, help="per server (two share the GPU)")
    parser.add_argument("--timeout", type=int, default=540, help="seconds for the whole run (default 540)")
    args = parser.parse_args(argv)
    if not 0 < args.gpu_memory_utilization <= 0.5:
        parser.error("--gpu-memory-utilization must be in (0, 0.5]: two servers share the GPU")
    if not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model}: not a checkpoint folder (no config.json)")
    for name in ("vllm_python", "quantgate_python"):
        path = getattr(args, name)
        if path is not None and not path.is_file() and not args.dry_run:
            parser.error(f"--{name.replace('_', '-')} {path}: not found")
    if args.wheelhouse is not None and not args.wheelhouse.is_dir():
        parser.error(f"--wheelhouse {args.wheelhouse}: not a folder")
    if args.out.exists() and any(args.out.iterdir()) and not args.dry_run:
        parser.error(f"{args.out}: exists and is not empty")
    return args


def plan(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(step name, argv) in order; the serve steps run in the background."""
    venvs = ROOT / ".bench-venvs"
    vllm_py = args.vllm_python or venvs / "vllm-gpu" / "bin" / "python"
    qg_py = args.quantgate_python or venvs / "quantgate" / "bin" / "python"
    offline = ["--no-index", "--find-links", str(args.wheelhouse)] if args.wheelhouse else []
    steps: list[tuple[str, list[str]]] = []
    if args.vllm_python is None:
        steps += [
            ("venv vllm", [sys.executable, "-m", "venv", str(vllm_py.parents[1])]),
            ("install vllm", [str(vllm_py), "-m", "pip", "install", *offline, f"vllm=={VLLM_VERSION}"]),
        ]
    if args.quantgate_python is None:
        steps += [
            ("venv quantgate", [sys.executable, "-m", "venv", str(qg_py.parents[1])]),
            ("install quantgate", [str(qg_py), "-m", "pip", "install", *offline, "-e", str(ROOT)]),
        ]
    int4 = args.out / "checkpoints" / f"{args.model.name}-{SCHEME}-rtn"
    serve = [
        str(qg_py),
        "-m",
        "quantgate.cli",
        "serve",
        "--device",
        "cuda",
        "--python",
        str(vllm_py),
        "--dtype",
        "bfloat16",
        "--max-logprobs",
        "64",
    ]
    extra = ["--", "--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    steps += [
        (
            "quantize int4",
            [
                str(qg_py),
                "-m",
                "quantgate.cli",
                "quantize",
                "--model",
                str(args.model),
                "--scheme",
                SCHEME,
                "--out",
                str(int4),
            ],
        ),
        ("serve bf16", serve + ["--model", str(args.model), "--log", str(args.out / "logs" / "bf16.log"), *extra]),
        ("serve int4", serve + ["--model", str(int4), "--log", str(args.out / "logs" / "int4.log"), *extra]),
        (
            "eval",
            [
                str(qg_py),
                "-m",
                "quantgate.cli",
                "eval",
                "--backend",
                "openai",
                "--model",
                str(int4),
                "--base-url",
                "{serve int4}",
                "--baseline-backend",
                "openai",
                "--baseline",
                str(args.model),
                "--baseline-base-url",
                "{serve bf16}",
                "--toolcall-mode",
                "chat",
                "--concurrency",
                "16",
                "--cache-dir",
                str(args.out / "cache"),
                "--out",
                str(args.out / "results"),
            ]
            + [a for suite in SUITES for a in ("--suite", suite)],
        ),
    ]
    return steps


def _start(argv: list[str], env: dict[str, str], deadline: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    line = process.stdout.readline().strip() if process.stdout else ""  # `quantgate serve` prints the URL first
    if not line.startswith("http") or time.time() > deadline:
        raise SystemExit(f"server did not start: {shlex.join(argv)} (see its --log)")
    return process, line


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)  # quantgate serve stops its vLLM by PID on SIGINT
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def latency_comparison(results: Path, variant: str) -> str:
    summary = json.loads((results / variant / "serving_latency" / "summary.json").read_text())
    rows = [f"{m['name']:<40} {m['value']:8.3f}" for m in summary["comparison"] or []]
    return "int4 / bf16 (serving_latency; < 1 is faster for TTFT/ITL, > 1 is faster for throughput)\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steps = plan(args)
    if args.dry_run:
        for index, (name, command) in enumerate(steps, 1):
            print(f"{index}. {name}: {shlex.join(command)}")
        print(f"then: {args.out}/latency_comparison.txt and {args.out}/summary.txt")
        return 0
    if shutil.which("nvidia-smi") is None:
        print("gpu_suites: no NVIDIA GPU here (nvidia-smi not found)", file=sys.stderr)
        return 2
    started = time.time()
    deadline = started + args.timeout
    args.out.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    urls: dict[str, str] = {}
    servers: list[subprocess.Popen] = []
    try:
        for name, command in steps:
            command = [a.format(**{k: v for k, v in urls.items()}) if a.startswith("{") else a for a in command]
            print(f"[{time.time() - started:5.0f} s] {name}", flush=True)
            if name.startswith("serve"):
                process, urls[name] = _start(command, env, deadline)
                servers.append(process)
            else:
                subprocess.run(command, check=True, env=env, timeout=max(1, deadline - time.time()))
        variant = f"{args.model.name}-{SCHEME}-rtn"
        comparison = latency_comparison(args.out / "results", variant)
        (args.out / "latency_comparison.txt").write_text(comparison + "\n")
        print(comparison)
        lines = []
        for summary in sorted((args.out / "results").glob("*/*/summary.json")):
            data = json.loads(summary.read_text())
            for metric in data["metrics"] + (data["comparison"] or []):
                lines.append(f"{summary.parent.parent.name}/{summary.parent.name}/{metric['name']} {metric['value']}")
        (args.out / "summary.txt").write_text("\n".join(lines) + "\n")
        print(f"done in {time.time() - started:.0f} s: {args.out}")
        return 0
    finally:
        for process in servers:
            _stop(process)


if __name__ == "__main__":
    sys.exit(main())
