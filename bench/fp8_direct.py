"""FP8 -> INT4 straight from a block-FP8 release, against converting it to BF16 first and quantizing that.

One run: (a) write a synthetic Kimi-K2-layout block-FP8 checkpoint (bench/make_synthetic_moe.py
--fp8) under --workdir, after checking that its disk holds it, the BF16 copy (twice its size) and
two INT4 outputs; if not, the size is reduced to what fits and the run says so; (b) --repeats
rounds, each running both sides, interleaved (ABBA: the side that goes first alternates):
  direct:   `quantgate quantize --model FP8 --scheme S`
  convert:  `quantgate quantize --model FP8 --scheme bf16` (the BF16 copy, as DeepSeek's
            fp8_cast_bf16.py writes it, but streamed by quantgate: the fastest conversion to
            hand here; the reference script needs CUDA and triton), then
            `quantgate quantize --model BF16 --scheme S`
each step a child process from a dropped page cache (at 1-2 TB nothing stays cached), measured by
bench/measure.run_measured: wall time, the `sync` after it, peak RSS of its process tree (VmRSS
summed, which counts the source shards' mapped pages, and RssAnon, which does not) and the
largest process's VmHWM; bytes written = the files each side leaves (the BF16 copy included);
(c) the two INT4 outputs compared file by file (sha256 from their manifests): they must be equal.

Usage: python bench/fp8_direct.py [--size-gb 4] [--shard-gb 1] [--repeats 2] [--workers 2]
           [--scheme kimi-k2-thinking-int4] [--workdir DIR] [--keep] [--record [DIR]]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from make_synthetic_moe import make_checkpoint
from measure import drop_page_cache, run_measured
from record import Table, add_record_argument, start_recording

REPO = Path(__file__).resolve().parent.parent
GB = 1e9
BF16_PER_FP8 = 2.0  # the BF16 copy's size over the FP8 checkpoint's (FP8 weights are most of it)
INT4_PER_FP8 = 0.75  # an INT4 output's size over the FP8 source's, rounded up (routed experts at ~4.5 bits)
HEADROOM = 1.1


def fitting_size(requested_gb: float, free_bytes: int) -> float:
    """The largest size <= requested whose FP8 source, BF16 copy and two INT4 outputs fit in free_bytes."""
    per_gb = (1 + BF16_PER_FP8 + 2 * INT4_PER_FP8) * HEADROOM * GB
    return min(requested_gb, round(free_bytes / per_gb, 1))


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def quantize_command(model: Path, scheme: str, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "quantgate", "quantize", "--model", str(model), "--scheme", scheme,
            "--out", str(out), "--workers", str(workers)]  # fmt: skip


def measured_step(command: list[str], inputs: list[Path], log: Path, env: dict) -> dict:
    """One child process from a dropped page cache; fails the benchmark if the child fails."""
    drop = drop_page_cache(inputs)
    run = run_measured(command, log, cwd=REPO, env=env).as_dict() | {"cache_drop": drop}
    if run["returncode"] != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {run['returncode']}); log: {log}")
    return run


def shards(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def side_direct(source: Path, work: Path, scheme: str, workers: int, env: dict) -> dict:
    out = work / "direct-int4"
    step = measured_step(quantize_command(source, scheme, out, workers), shards(source), work / "direct.log", env)
    return {"side": "direct", "steps": [step], "output": out, "bytes_written": folder_bytes(out)}


def side_convert(source: Path, work: Path, scheme: str, workers: int, env: dict) -> dict:
    bf16, out = work / "bf16", work / "convert-int4"
    convert = measured_step(quantize_command(source, "bf16", bf16, workers), shards(source), work / "bf16.log", env)
    then = measured_step(quantize_command(bf16, scheme, out, workers), shards(bf16), work / "convert.log", env)
    written = folder_bytes(bf16) + folder_bytes(out)
    return {"side": "convert", "steps": [convert, then], "output": out, "bytes_written": written}


def summarise(side: dict) -> dict:
    steps = side["steps"]
    return {
        "side": side["side"],
        "wall_s": sum(s["wall_s"] for s in steps),
        "durable_s": sum(s["durable_s"] for s in steps),
        "bytes_written": side["bytes_written"],
        "peak_tree_rss_bytes": max(s["peak_tree_rss_bytes"] for s in steps),
        "peak_tree_anon_bytes": max(s["peak_tree_anon_bytes"] for s in steps),
        "max_process_hwm_bytes": max(s["max_process_hwm_bytes"] for s in steps),
        "steps": steps,
    }


def same_output(a: Path, b: Path) -> bool:
    """Every file but the manifest equal (the manifests name different sources)."""
    files_a = json.loads((a / "quantgate.json").read_text())["files"]
    files_b = json.loads((b / "quantgate.json").read_text())["files"]
    return files_a == files_b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=4.0, help="FP8 checkpoint size, GB (default 4)")
    parser.add_argument("--shard-gb", type=float, default=1.0, help="shard size, GB (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of both sides (default 2)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scheme", default="kimi-k2-thinking-int4")
    parser.add_argument("--workdir", type=Path, default=None, help="where the checkpoints go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    recording = start_recording("fp8_direct", args.record) if args.record else None

    root = Path(tempfile.mkdtemp(prefix="fp8-direct-", dir=args.workdir))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    try:
        free = shutil.disk_usage(root).free
        size_gb = fitting_size(args.size_gb, free)
        notes = [f"disk free at start under {root.parent}: {free / GB:.1f} GB"]
        if size_gb < args.size_gb:
            notes.append(f"reduced from {args.size_gb} GB to {size_gb} GB: the FP8 source, the BF16 copy and "
                         "two INT4 outputs must fit")  # fmt: skip
        source = root / "fp8"
        made = make_checkpoint(source, size_gb, args.shard_gb, fp8=True)
        print(f"synthetic FP8 checkpoint: {json.dumps(made)}", file=sys.stderr)
        rounds = []
        for repeat in range(args.repeats):
            work = root / f"round-{repeat}"
            work.mkdir()
            order = ("direct", "convert") if repeat % 2 == 0 else ("convert", "direct")
            sides = {}
            for name in order:
                run = side_direct if name == "direct" else side_convert
                sides[name] = run(source, work, args.scheme, args.workers, env)
                print(f"round {repeat} {name}: {summarise(sides[name])['wall_s']:.1f} s", file=sys.stderr)
            identical = same_output(sides["direct"]["output"], sides["convert"]["output"])
            rounds.append({"repeat": repeat, "order": order, "identical_int4": identical,
                           **{name: summarise(side) for name, side in sides.items()}})  # fmt: skip
            shutil.rmtree(work)  # the disk holds one round at a time
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    rows = []
    for r in rounds:
        for name in r["order"]:
            s = r[name]
            rows.append((r["repeat"], name, round(s["wall_s"], 1), round(s["durable_s"], 1),
                         round(s["bytes_written"] / GB, 2), round(s["peak_tree_rss_bytes"] / GB, 2),
                         round(s["peak_tree_anon_bytes"] / GB, 2), round(s["max_process_hwm_bytes"] / GB, 2),
                         r["identical_int4"]))  # fmt: skip
    medians = {
        name: {key: statistics.median(r[name][key] for r in rounds) for key in ("wall_s", "durable_s", "bytes_written")}
        for name in ("direct", "convert")
    }
    summary = [
        ("wall s (median)", round(medians["direct"]["wall_s"], 1), round(medians["convert"]["wall_s"], 1),
         round(medians["convert"]["wall_s"] / medians["direct"]["wall_s"], 2)),
        ("durable s (median)", round(medians["direct"]["durable_s"], 1), round(medians["convert"]["durable_s"], 1),
         round(medians["convert"]["durable_s"] / medians["direct"]["durable_s"], 2)),
        ("GB written", round(medians["direct"]["bytes_written"] / GB, 2),
         round(medians["convert"]["bytes_written"] / GB, 2),
         round(medians["convert"]["bytes_written"] / medians["direct"]["bytes_written"], 2)),
    ]  # fmt: skip
    tables = [
        Table("side by side", ("measure", "FP8 -> INT4", "FP8 -> BF16 -> INT4", "convert / direct"), summary),
        Table("runs (interleaved)", ("round", "side", "wall s", "durable s", "GB written", "peak RSS GB",
                                     "peak anon GB", "max process HWM GB", "INT4 identical"), rows),  # fmt: skip
    ]
    notes += [
        f"source: synthetic block-FP8 checkpoint, {made['bytes'] / GB:.2f} GB in {made['shards']} shards of "
        f"{args.shard_gb} GB, {made['n_routed_experts']} routed experts per layer (bench/make_synthetic_moe.py --fp8)",
        f"scheme {args.scheme}, --workers {args.workers}; every step from a dropped page cache",
        "convert = quantgate's streamed `--scheme bf16` (what fp8_cast_bf16.py writes), then quantizing the copy",
        "peak RSS counts the mapped source pages (VmRSS over the process tree); peak anon does not",
    ]
    result = {"size_gb": size_gb, "source": made, "scheme": args.scheme, "workers": args.workers, "rounds": rounds}
    for table in tables:
        print(table.markdown())
    if recording:
        recording.write(tables, data=json.loads(json.dumps(result, default=str)), notes=notes)
    return 0 if all(r["identical_int4"] for r in rounds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
