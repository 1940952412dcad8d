"""GPTQ: quantgate (`quantize --method gptq`) against llm-compressor's GPTQModifier oneshot, side by side.

One run, same machine, same calibration token ids (quantgate's calibration set, written to JSON
for the peer), same compressed-tensors scheme and ignore list, same block size and dampening.
Each tool runs as its own process tree (llm-compressor in its venv, bench/llmcompressor_gptq_peer.py)
and is measured by bench/measure.py: wall time and peak RSS of the tree. Both outputs (and RTN's,
for reference) are then scored here on held-out text the calibration did not see
(suites/data/tinyk2/heldout_text.jsonl rows 100..199): perplexity and mean KL against BF16.

    ~/.cache/quantgate/tox/test/bin/python bench/gptq_vs_llmcompressor.py [--scheme kimi-k2-thinking-int4]
        [--samples 64] [--length 256] [--threads 1] [--json reports/gptq_vs_llmcompressor.json] [--record [DIR]]

Targets (issue 4): perplexity no worse than llm-compressor's, wall time no longer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from gptq_heldout import kl_mean, perplexity, score  # noqa: E402

from bench.measure import run_measured  # noqa: E402
from bench.record import Table, add_record_argument, start_recording  # noqa: E402
from quant.build import QuantizeRequest, quantize  # noqa: E402
from quant.gptq.calibration import build_calibration  # noqa: E402
from quant.gptq.run import gptq_scheme  # noqa: E402
from quant.schemes import get_scheme  # noqa: E402
from quantgate.core.gptq import CalibrationSpec, GPTQOptions  # noqa: E402

PEER_PYTHONS = (
    ROOT / ".bench-venvs/llmcompressor/bin/python",
    Path.home() / ".cache/quantgate/llmcompressor/bin/python",  # the shared place the helpers use
    Path("/work/main/.bench-venvs/llmcompressor/bin/python"),
)


def peer_python() -> Path:
    for candidate in PEER_PYTHONS:
        if candidate.exists():
            return candidate
    raise SystemExit("llm-compressor venv missing: run bench/setup_llmcompressor_venv.sh")


def record_tables(args: argparse.Namespace, rows: dict, calibration_sha256: str) -> tuple[list[Table], list[str]]:
    """The printed table as Markdown, and the ratios as notes."""
    title = (
        f"{args.scheme}, calibration {args.samples} x {args.length} tokens (sha256 {calibration_sha256[:12]}), "
        f"threads {args.threads}, calibrate_all_experts {args.calibrate_all_experts}"
    )
    formats = {"wall_s": ".1f", "peak_rss_mb": ".0f", "perplexity": ".4f", "kl_mean": ".5f"}
    table_rows = [
        (name, *(format(row[k], f) if k in row else None for k, f in formats.items())) for name, row in rows.items()
    ]
    table = Table(title, ("", "wall s", "peak RSS MB", "held-out PPL", "KL vs BF16"), table_rows)
    notes = [f"{name}: error {row['error'][:200]!r}" for name, row in rows.items() if "error" in row]
    ours, peer = rows["quantgate"], rows["llmcompressor"]
    if "perplexity" in ours and "perplexity" in peer:
        ratio = ours["perplexity"] / peer["perplexity"]
        notes.append(f"perplexity quantgate/llm-compressor: {ratio:.4f} (target <= 1)")
    notes.append(f"wall time quantgate/llm-compressor: {ours['wall_s'] / peer['wall_s']:.3f} (target <= 1)")
    return [table], notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/kimi-k2-tiny")
    parser.add_argument("--scheme", default="kimi-k2-thinking-int4")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each tool")
    parser.add_argument("--calibrate-all-experts", action="store_true", help="both tools (llm-compressor's default)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    add_record_argument(parser)
    args = parser.parse_args(argv)
    recording = start_recording("gptq_vs_llmcompressor", args.record) if args.record else None

    torch.set_num_threads(args.threads)  # the scoring here too: oversubscribed threads crawl on a shared CPU
    work = Path(tempfile.mkdtemp(prefix="gptq-bench-", dir=args.workdir))
    options = GPTQOptions.for_scheme(
        args.scheme, threads=args.threads, calibrate_all_experts=args.calibrate_all_experts
    )
    spec = CalibrationSpec(samples=args.samples, sample_length=args.length)
    ids, calibration = build_calibration(spec, args.model, ROOT)
    (work / "calibration.json").write_text(json.dumps(ids.tolist()))
    scheme = gptq_scheme(get_scheme(args.scheme), options)
    (work / "spec.json").write_text(json.dumps({
        "scheme": scheme.quantization.model_dump(mode="json"), "ignore": list(scheme.ignore),
        "block_size": options.block_size, "dampening": options.dampening,
        "calibrate_all_experts": options.calibrate_all_experts,
    }))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}

    ours_cmd = [
        sys.executable, "-m", "quantgate.cli", "quantize", "--model", str(args.model), "--scheme", args.scheme,
        "--method", "gptq", "--out", str(work / "quantgate"), "--calibration-samples", str(args.samples),
        "--calibration-length", str(args.length), "--threads", str(args.threads),
        *(["--calibrate-all-experts"] if args.calibrate_all_experts else []),
    ]  # fmt: skip
    peer_cmd = [
        str(peer_python()), str(ROOT / "bench/llmcompressor_gptq_peer.py"), "--model", str(args.model),
        "--out", str(work / "llmcompressor"), "--spec", str(work / "spec.json"),
        "--calibration", str(work / "calibration.json"), "--threads", str(args.threads),
    ]  # fmt: skip
    peer_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    runs = {
        "quantgate": run_measured(ours_cmd, work / "quantgate.log", cwd=ROOT, env=env),
        "llmcompressor": run_measured(peer_cmd, work / "llmcompressor.log", cwd=ROOT, env=peer_env),
    }
    rtn = quantize(QuantizeRequest(args.model, get_scheme(args.scheme), out=work / "rtn")).path

    baseline = score(args.model)
    rows = {"bf16": {"perplexity": perplexity(baseline), "kl_mean": 0.0}}
    for name, path in (("rtn", rtn), ("quantgate", work / "quantgate"), ("llmcompressor", work / "llmcompressor")):
        run = runs.get(name)
        row = {"wall_s": run.wall_s, "peak_rss_mb": run.peak_rss_bytes / 2**20} if run else {}
        if run and run.returncode != 0:
            row["error"] = (work / f"{name}.log").read_text()[-2000:]
        else:
            try:
                scores = score(path)
                row |= {"perplexity": perplexity(scores), "kl_mean": kl_mean(baseline, scores)}
            except Exception as error:  # a peer output transformers cannot load is a result, not a crash
                row["error"] = f"{type(error).__name__}: {error}"
        rows[name] = row
    peer_log = (work / "llmcompressor.log").read_text().strip().splitlines()
    peer_json = next((json.loads(line) for line in reversed(peer_log) if line.startswith("{")), None)
    load = os.getloadavg()

    print(f"scheme {args.scheme}; calibration {args.samples} x {args.length} tokens "
          f"(sha256 {calibration.sha256[:12]}); threads {args.threads}; "
          f"calibrate_all_experts {args.calibrate_all_experts}; load {load[0]:.1f}")  # fmt: skip
    print(f"{'':14} {'wall s':>8} {'peak RSS MB':>12} {'held-out PPL':>13} {'KL vs BF16':>11}")
    for name, row in rows.items():
        print(f"{name:14} {row.get('wall_s', float('nan')):8.1f} {row.get('peak_rss_mb', float('nan')):12.0f} "
              f"{row.get('perplexity', float('nan')):13.4f} {row.get('kl_mean', float('nan')):11.5f}"
              + (f"  ERROR {row['error'][:200]!r}" if "error" in row else ""))  # fmt: skip
    ours, peer = rows["quantgate"], rows["llmcompressor"]
    if "perplexity" in ours and "perplexity" in peer:
        print(f"perplexity quantgate/llm-compressor: {ours['perplexity'] / peer['perplexity']:.4f} (target <= 1)")
    print(f"wall time quantgate/llm-compressor: {ours['wall_s'] / peer['wall_s']:.3f} (target <= 1)")
    print(f"peer: {peer_json}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {"rows": rows, "peer": peer_json, "calibration": calibration.model_dump(), "load": load,
                  "runs": {k: v.as_dict() for k, v in runs.items()}}  # fmt: skip
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if recording:
        data = {"rows": rows, "peer": peer_json, "runs": {k: v.as_dict() for k, v in runs.items()}}
        recording.write(*record_tables(args, rows, calibration.sha256), data=data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
