"""GPTQ where the algorithm dominates: quantgate against llm-compressor's GPTQModifier on a synthetic checkpoint.

A synthetic-weight checkpoint with DeepSeek-V3 / Kimi K2's layout and tensor names
(bench/make_synthetic_moe.py, --size-gb, --layers) is quantized with GPTQ by
  - quantgate (`quantgate quantize --method gptq`, one process),
  - llm-compressor 0.14's GPTQModifier oneshot (bench/llmcompressor_gptq_peer.py in its own venv),
  - quantgate under `torchrun --nproc-per-node N` (gloo), --threads each,
  - quantgate in one process with N x --threads threads (the same cores as the N ranks; not the
    ranks' bytes: BLAS reductions depend on the thread count),
on the same calibration token ids (quantgate's calibration set, written to JSON for the peer);
the calibration activations are the synthetic model's own forward. Same scheme, ignore list,
block size, dampening, actorder, observer and expert calibration (quantgate's defaults for the
scheme, given to the peer); --threads torch threads per process. The runs are interleaved (quantgate,
llm-compressor, quantgate N ranks, quantgate N x threads, then again per repeat) so that a change in the machine's load
falls on all of them. Each run is measured by bench/measure.py (wall time and peak RSS of the
process tree). The import time of each tool (a process that only imports what the run imports)
is measured beside it, to show that the algorithm, not the start-up, is what is timed. The
single-process and N-rank quantgate outputs are compared byte for byte. Peak RSS counts file pages
mapped into the process as well as anonymous memory (peak anon MB: the latter alone).

    ~/.cache/quantgate/tox/test/bin/python bench/gptq_large.py [--size-gb 1.2] [--layers 4]
        [--scheme kimi-k2-thinking-int4] [--samples 8] [--length 128] [--repeats 1] [--ranks 2]
        [--workdir /tmp/gptq-large] [--record [DIR]]

Targets (issue 19): quantgate's wall time at most half of llm-compressor's, peak RSS no higher.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.record import Table, add_record_argument, start_recording  # noqa: E402

QUANTGATE_IMPORTS = "import quantgate.cli, quant.gptq.run, quant.gptq.calibration"
PEER_IMPORTS = (
    "import torch, compressed_tensors.quantization, datasets, transformers; from llmcompressor import oneshot; "
    "from llmcompressor.modeling.moe.linearize import linearize_moe; "
    "from llmcompressor.modifiers.quantization import GPTQModifier"
)


def _same_bytes(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.2)
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the synthetic model (first dense)")
    parser.add_argument("--scheme", default="kimi-k2-thinking-int4")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gptq-large"))
    parser.add_argument("--keep-model", action="store_true", help="keep the synthetic checkpoint afterwards")
    parser.add_argument("--json", type=Path, default=None)
    add_record_argument(parser)
    args = parser.parse_args(argv)
    recording = start_recording("gptq_large", args.record) if args.record else None

    from gptq_vs_llmcompressor import peer_python
    from make_synthetic_moe import make_checkpoint
    from measure import run_measured

    from quant.gptq.calibration import build_calibration
    from quant.gptq.run import gptq_scheme
    from quant.schemes import get_scheme
    from quantgate.core.gptq import CalibrationSpec, GPTQOptions

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"synthetic-{args.size_gb:g}gb-{args.layers}l"
    if not (model / "config.json").exists():
        shutil.rmtree(model, ignore_errors=True)
        print(f"writing {model}", flush=True)
        make_checkpoint(model, args.size_gb, layers=args.layers)
    config = json.loads((model / "config.json").read_text())
    checkpoint_bytes = sum(p.stat().st_size for p in model.glob("*.safetensors"))

    options = GPTQOptions.for_scheme(args.scheme, threads=args.threads)
    ids, calibration = build_calibration(CalibrationSpec(samples=args.samples, sample_length=args.length), model, ROOT)
    (work / "calibration.json").write_text(json.dumps(ids.tolist()))
    scheme = gptq_scheme(get_scheme(args.scheme), options)
    weights = scheme.quantization.weights.model_copy(update={"observer": options.observer})
    spec = {
        "scheme": scheme.quantization.model_copy(update={"weights": weights}).model_dump(mode="json"),
        "ignore": list(scheme.ignore), "block_size": options.block_size, "dampening": options.dampening,
        "calibrate_all_experts": options.calibrate_all_experts, "actorder": options.actorder,
    }  # fmt: skip
    (work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    peer_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    flags = [
        "quantize", "--model", str(model), "--scheme", args.scheme, "--method", "gptq",
        "--calibration-samples", str(args.samples), "--calibration-length", str(args.length),
        "--threads", str(args.threads),
    ]  # fmt: skip
    commands = {
        "quantgate": ([sys.executable, "-m", "quantgate.cli", *flags], env),
        "llm-compressor": (
            [str(peer_python()), str(ROOT / "bench/llmcompressor_gptq_peer.py"), "--model", str(model),
             "--spec", str(work / "spec.json"), "--calibration", str(work / "calibration.json"),
             "--threads", str(args.threads)],
            peer_env,
        ),
        f"quantgate {args.ranks} ranks": (
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.ranks),
             "-m", "quantgate.cli", *flags],
            env,
        ),
        f"quantgate {args.ranks * args.threads} threads": (
            [sys.executable, "-m", "quantgate.cli", *flags[:-1], str(args.ranks * args.threads)],
            {**env, "OMP_NUM_THREADS": str(args.ranks * args.threads)},
        ),
    }  # fmt: skip
    imports = {
        "quantgate": run_measured([sys.executable, "-c", QUANTGATE_IMPORTS], work / "import-quantgate.log", env=env),
        "llm-compressor": run_measured(
            [str(peer_python()), "-c", PEER_IMPORTS], work / "import-peer.log", env=peer_env
        ),
    }
    runs: list[dict] = []
    kept: dict[str, Path] = {}
    for repeat in range(args.repeats):
        for tool, (command, tool_env) in commands.items():
            out = work / f"out-{tool.replace(' ', '-')}-{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            load = os.getloadavg()[0]
            measured = run_measured([*command, "--out", str(out)], work / f"{out.name}.log", cwd=ROOT, env=tool_env)
            base = "llm-compressor" if tool == "llm-compressor" else "quantgate"
            row = {
                "tool": tool, "repeat": repeat, "returncode": measured.returncode, "wall_s": measured.wall_s,
                "cpu_s": measured.cpu_s, "peak_rss_mb": measured.peak_rss_bytes / 2**20,
                "peak_anon_mb": measured.peak_tree_anon_bytes / 2**20, "load_at_start": load,
                "import_s": imports[base].wall_s, "measurement": measured.as_dict(),
            }  # fmt: skip
            if tool == "llm-compressor" and measured.returncode == 0:
                log = (work / f"{out.name}.log").read_text().splitlines()
                row["peer"] = next((json.loads(line) for line in reversed(log) if line.startswith("{")), None)
            if measured.returncode != 0:
                row["error"] = (work / f"{out.name}.log").read_text()[-1500:]
            runs.append(row)
            error = f"  ERROR {row['error'][-300:]!r}" if "error" in row else ""
            print(f"{tool:22} repeat {repeat}: {measured.wall_s:8.1f} s, peak RSS {row['peak_rss_mb']:7.0f} MB, "
                  f"load {load:.1f}{error}", flush=True)  # fmt: skip
            if tool in ("quantgate", f"quantgate {args.ranks} ranks") and tool not in kept and measured.returncode == 0:
                kept[tool] = out
            else:
                shutil.rmtree(out, ignore_errors=True)
    identical = None
    if len(kept) == 2:
        identical = _same_bytes(*kept.values())
    for out in kept.values():
        shutil.rmtree(out, ignore_errors=True)
    if not args.keep_model:
        shutil.rmtree(model, ignore_errors=True)

    def median(tool: str, key: str) -> float | None:
        values = [r[key] for r in runs if r["tool"] == tool and r["returncode"] == 0]
        return statistics.median(values) if values else None

    tables = [
        Table(
            f"{args.scheme}, synthetic DeepSeek-V3 layout {checkpoint_bytes / 1e9:.2f} GB "
            f"({config['num_hidden_layers']} layers, {config['n_routed_experts']} routed experts, "
            f"top {config['num_experts_per_tok']}), calibration "
            f"{args.samples} x {args.length} tokens, {args.threads} thread(s) per process",
            ("run", "repeat", "wall s", "CPU s", "peak RSS MB", "peak anon MB", "import s", "import share",
             "load at start"),
            [
                (r["tool"], r["repeat"], f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['peak_rss_mb']:.0f}",
                 f"{r['peak_anon_mb']:.0f}",
                 f"{r['import_s']:.1f}",
                 f"{100 * r['import_s'] / r['wall_s']:.1f} %", f"{r['load_at_start']:.1f}")
                for r in runs
            ],
        )
    ]  # fmt: skip
    notes = []
    ours, peer = median("quantgate", "wall_s"), median("llm-compressor", "wall_s")
    ranks = median(f"quantgate {args.ranks} ranks", "wall_s")
    if ours and peer:
        notes.append(f"wall time quantgate / llm-compressor (medians): {ours / peer:.3f} (target <= 0.5)")
        cpu = median("quantgate", "cpu_s") / median("llm-compressor", "cpu_s")
        notes.append(f"CPU time quantgate / llm-compressor (medians; less affected by the machine's load): {cpu:.3f}")
        rss = median("quantgate", "peak_rss_mb") / median("llm-compressor", "peak_rss_mb")
        notes.append(f"peak RSS quantgate / llm-compressor (medians): {rss:.3f} (target <= 1)")
    threaded = median(f"quantgate {args.ranks * args.threads} threads", "wall_s")
    if peer and ranks:
        notes.append(f"wall time quantgate {args.ranks} ranks / llm-compressor (medians): {ranks / peer:.3f}")
        rss = median(f"quantgate {args.ranks} ranks", "peak_rss_mb") / median("llm-compressor", "peak_rss_mb")
        notes.append(f"peak RSS quantgate {args.ranks} ranks (all ranks together) / llm-compressor: {rss:.3f}")
    if ours and ranks:
        cpu = median(f"quantgate {args.ranks} ranks", "cpu_s") / median("quantgate", "cpu_s")
        notes.append(f"CPU time of {args.ranks} ranks (all together) / 1 process: {cpu:.2f}")
        notes.append(f"speed-up of {args.ranks} ranks over 1 process, {args.threads} thread(s) each: "
                     f"{ours / ranks:.2f}")  # fmt: skip
    if threaded and ranks:
        notes.append(f"speed-up of {args.ranks} ranks over 1 process with {args.ranks * args.threads} threads "
                     f"(the same cores): {threaded / ranks:.2f}")  # fmt: skip
    if identical is not None:
        notes.append(f"quantgate 1 process and {args.ranks} ranks wrote byte-identical checkpoints: {identical}")
    notes.append(f"options: {options.model_dump()}")
    for line in [t.markdown() for t in tables] + notes:
        print(line)
    data = {
        "runs": runs, "imports": {k: v.as_dict() for k, v in imports.items()}, "identical": identical,
        "config": config, "checkpoint_bytes": checkpoint_bytes, "calibration": calibration.model_dump(),
    }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(data, indent=2, default=str) + "\n")
    if recording:
        recording.write(tables, data=data, notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
