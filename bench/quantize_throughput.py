"""Quantization throughput: quantgate against llm-compressor's model_free_ptq and the disk's limit.

One run: (a) write a synthetic Kimi-K2-layout BF16 checkpoint (bench/make_synthetic_moe.py) into
a temporary directory under --workdir (that directory's disk is the one measured); (b) measure
the disk: the input read from a dropped page cache (1 stream and --workers streams) and an
fsync'd write as large as the input; (c) per scheme, from a dropped page cache each time,
llm-compressor's `model_free_ptq` (its own venv, bench/setup_llmcompressor_venv.sh) and
`quantgate quantize`, each as a child process: wall time, the `sync` after it, peak RSS of its
process tree; (d) the two outputs compared tensor by tensor (bench/compare_checkpoints.py);
(e) a table, the ratios against the targets, and --json.

Start-up: each tool's interpreter and imports alone, from a dropped page cache (quantgate:
quant.build, which imports compressed-tensors and with it transformers and torch; llm-compressor:
llmcompressor). On a small machine this is a large, fixed part of both runs, so the ratios are
also printed with it subtracted from each tool's time ("after start-up"), beside the end-to-end
ones that the targets are judged on.

Times: `durable` = the process's wall time + the `sync` after it (its output on disk), the
quantity comparable with the fsync'd disk limit; both tools are compared on it. Throughput is
input (BF16) GB per durable second. The disk's limit for a scheme is reading the input cold then
writing quantgate's output with fsync, one after the other: R/read + W/write seconds.

Both tools get the same compressed-tensors scheme (quantgate's, serialised) and quantgate's
ignore list plus the router and the embeddings: on disk llm-compressor cannot tell those 2-D
weights from a Linear's, and quantgate never quantizes them.

Usage: .venv/bin/python bench/quantize_throughput.py [--size-gb 4.2] [--shard-gb 1] [--workers 2]
           [--schemes kimi-k2-thinking-int4,fp8-block] [--skip-peer] [--keep] [--json PATH] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare_checkpoints import compare_checkpoints
from make_synthetic_moe import make_checkpoint
from measure import cold_read, cold_start, drop_page_cache, fsync_write, run_measured
from record import Table, add_record_argument, start_recording

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
PEER_VENV = REPO / ".bench-venvs" / "llmcompressor"
# what each tool imports to quantize (bench/llmcompressor_peer.py; quant/commands.py)
PEER_IMPORTS = "import compressed_tensors.quantization\nfrom llmcompressor import model_free_ptq"
QUANTGATE_IMPORTS = "import quantgate.cli, quant.build, quant.schemes"
DEFAULT_SCHEMES = ("kimi-k2-thinking-int4", "fp8-block")
GB = 1e9

# The targets, with their direction.
MIN_SPEEDUP_VS_PEER = 6.0  # quantgate throughput / llm-compressor throughput, higher is better
MAX_RSS_PER_SHARD = 1.0  # peak RSS / shard size, lower is better (1 GB with 1 GB shards)
MIN_FRACTION_OF_IO_LIMIT = 0.5  # quantgate throughput / the disk's limit, higher is better


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-gb", type=float, default=4.2, help="synthetic checkpoint size, GB (default 4.2)"
    )
    parser.add_argument("--shard-gb", type=float, default=1.0, help="shard size, GB (default 1)")
    parser.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES), help="comma-separated scheme names")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="quantgate and llm-compressor worker threads (default: CPUs)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the temporary directory goes: the disk measured (default: $TMPDIR)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--skip-peer", action="store_true", help="do not run llm-compressor")
    parser.add_argument("--peer-venv", type=Path, default=PEER_VENV, help="llm-compressor venv")
    parser.add_argument("--json", type=Path, help="write the results here")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    args.schemes = [s for s in args.schemes.split(",") if s]
    if not args.schemes:
        parser.error("--schemes: give at least one scheme")
    if args.size_gb <= 0 or args.shard_gb <= 0 or args.workers < 1:
        parser.error("--size-gb and --shard-gb must be positive, --workers at least 1")
    return args


def peer_spec(scheme_name: str) -> dict:
    """quantgate's scheme as llm-compressor takes it: a QuantizationScheme and an ignore list."""
    from quant.schemes import get_scheme
    from quant.select import NEVER_QUANTIZED

    scheme = get_scheme(scheme_name)
    group = scheme.quantization.model_copy(update={"format": scheme.format.value})
    return {"scheme": group.model_dump(mode="json"), "ignore": [*scheme.ignore, *NEVER_QUANTIZED]}


def ensure_peer_venv(venv: Path) -> Path:
    subprocess.run(["bash", str(BENCH / "setup_llmcompressor_venv.sh"), str(venv)], check=True)
    return venv / "bin" / "python"


def output_bytes(checkpoint: Path) -> int:
    return sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))


def _log_tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_tool(
    tool: str, command: list[str], out: Path, inputs: list[Path], logs: Path, input_bytes: int
) -> dict:
    log = logs / f"{out.name}.log"
    cache_drop = drop_page_cache(inputs)
    measured = run_measured(command, log, cwd=REPO, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    result = {"tool": tool, "cache_drop": cache_drop, "log": str(log), **measured.as_dict()}
    if measured.returncode != 0:
        result["error"] = _log_tail(log)
        print(f"  {tool} failed (exit {measured.returncode}):\n{result['error']}", file=sys.stderr)
        return result
    result["output_bytes"] = output_bytes(out)
    result["input_gb_per_s"] = input_bytes / measured.durable_s / GB
    return result


def run_scheme(
    scheme: str, args: argparse.Namespace, model: Path, work: Path, peer_python: Path | None, source: dict
) -> dict:
    inputs = sorted(model.glob("*.safetensors"))
    outputs, logs = work / "outputs", work / "logs"
    outputs.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    runs = {}
    if peer_python is not None:
        spec = work / f"llmcompressor-{scheme}.json"
        spec.write_text(json.dumps(peer_spec(scheme), indent=2))
        out = outputs / f"llmcompressor-{scheme}"
        command = [
            str(peer_python),
            str(BENCH / "llmcompressor_peer.py"),
            "--model",
            str(model),
            "--out",
            str(out),
            "--spec",
            str(spec),
            "--workers",
            str(args.workers),
        ]
        print(f"  llm-compressor model_free_ptq {scheme} ...", flush=True)
        runs["llm-compressor"] = run_tool("llm-compressor", command, out, inputs, logs, source["bytes"])
    out = outputs / f"quantgate-{scheme}"
    command = [
        sys.executable,
        "-m",
        "quantgate.cli",
        "quantize",
        "--model",
        str(model),
        "--scheme",
        scheme,
        "--out",
        str(out),
        "--workers",
        str(args.workers),
    ]
    print(f"  quantgate quantize {scheme} ...", flush=True)
    runs["quantgate"] = run_tool("quantgate", command, out, inputs, logs, source["bytes"])
    result: dict = {"scheme": scheme, "runs": runs}
    peer = runs.get("llm-compressor")
    if peer and "error" not in peer and "error" not in runs["quantgate"]:
        print(f"  comparing {scheme} outputs ...", flush=True)
        comparison = compare_checkpoints(outputs / f"quantgate-{scheme}", outputs / f"llmcompressor-{scheme}")
        result["comparison"] = comparison.as_dict() | {"summary": comparison.summary()}
    if not args.keep:
        shutil.rmtree(outputs / f"quantgate-{scheme}", ignore_errors=True)
        shutil.rmtree(outputs / f"llmcompressor-{scheme}", ignore_errors=True)
    return result


def disk_limits(model: Path, work: Path, streams: int, input_bytes: int) -> dict:
    inputs = sorted(model.glob("*.safetensors"))
    reads = [cold_read(inputs, 1)]
    if streams > 1 and len(inputs) > 1:
        reads.append(cold_read(inputs, min(streams, len(inputs))))
    write = fsync_write(work / "fsync-probe.bin", input_bytes)
    return {
        "reads": reads,
        "read_gb_per_s": max(r["gb_per_s"] for r in reads),
        "write": write,
        "write_gb_per_s": write["gb_per_s"],
    }


def start_up(model: Path, peer_python: Path | None) -> dict:
    """Seconds of each tool's interpreter start and imports, from a dropped page cache."""
    inputs = sorted(model.glob("*.safetensors"))
    found = {"quantgate": cold_start([sys.executable, "-c", QUANTGATE_IMPORTS], inputs, cwd=REPO)}
    if peer_python is not None:
        found["llm-compressor"] = cold_start([str(peer_python), "-c", PEER_IMPORTS], inputs)
    return found


def ratios(result: dict, source: dict, disk: dict, shard_gb: float, startup: dict) -> dict:
    """The issue's ratios for one scheme, unrounded, each with its target and direction."""
    ours = result["runs"]["quantgate"]
    if "error" in ours:
        return {}
    read_s = source["bytes"] / (disk["read_gb_per_s"] * GB)
    write_s = ours["output_bytes"] / (disk["write_gb_per_s"] * GB)
    limit_s = read_s + write_s
    found = {
        "io_limit_s": limit_s,
        "io_limit_overlapped_s": max(read_s, write_s),
        "io_limit_input_gb_per_s": source["bytes"] / limit_s / GB,
        "fraction_of_io_limit": {
            "value": limit_s / ours["durable_s"],
            "target": MIN_FRACTION_OF_IO_LIMIT,
            "better": "higher",
        },
        "peak_rss_per_shard": {
            "value": ours["peak_rss_bytes"] / (shard_gb * GB),
            "target": MAX_RSS_PER_SHARD,
            "better": "lower",
        },
        "peak_rss_per_model": ours["peak_rss_bytes"] / source["bytes"],
    }
    ours_after = ours["durable_s"] - startup["quantgate"]
    found["fraction_of_io_limit_after_startup"] = limit_s / ours_after
    peer = result["runs"].get("llm-compressor")
    if peer and "error" not in peer:
        found["speedup_vs_llmcompressor"] = {
            "value": peer["durable_s"] / ours["durable_s"],
            "target": MIN_SPEEDUP_VS_PEER,
            "better": "higher",
        }
        found["speedup_vs_llmcompressor_wall_only"] = peer["wall_s"] / ours["wall_s"]
        found["speedup_vs_llmcompressor_after_startup"] = (peer["durable_s"] - startup["llm-compressor"]) / ours_after
    for ratio in found.values():
        if isinstance(ratio, dict):
            value, target = ratio["value"], ratio["target"]
            ratio["meets"] = value >= target if ratio["better"] == "higher" else value <= target
    return found


def print_report(results: dict) -> None:
    source, disk = results["source"], results["disk"]
    print()
    print(
        f"synthetic checkpoint: {source['bytes'] / GB:.2f} GB BF16 in {source['shards']} shards of <= "
        f"{results['args']['shard_gb']:g} GB, {source['tensors']} tensors, "
        f"{source['n_routed_experts']} routed experts per MoE layer"
    )
    reads = ", ".join(
        f"{r['gb_per_s']:.2f} GB/s ({r['streams']} stream{'s' * (r['streams'] > 1)})" for r in disk["reads"]
    )
    print(
        f"disk under {results['workdir']}: cold read {reads}; "
        f"fsync'd write {disk['write_gb_per_s']:.2f} GB/s; "
        f"page cache dropped by {disk['reads'][0]['cache_drop']}"
    )
    print(
        f"machine: {results['machine']['cpus']} CPUs, load average at start "
        f"{results['machine']['load_average_at_start'][0]:.1f}; workers: {results['args']['workers']} "
        "(threads in both tools)"
    )
    startup = ", ".join(f"{tool} {seconds:.1f} s" for tool, seconds in results["startup"].items())
    print(f"start-up (interpreter + imports, cold page cache): {startup}")
    print()
    header = (
        f"{'scheme':<22} {'tool':<15} {'wall s':>7} {'+sync s':>7} {'GB/s in':>7} {'peak RSS GB':>11} "
        f"{'anon GB':>7} {'out GB':>6}  outputs"
    )
    print(header)
    print("-" * len(header))
    for result in results["schemes"]:
        comparison = result.get("comparison", {}).get("summary", "not compared")
        for tool, run in result["runs"].items():
            if "error" in run:
                print(
                    f"{result['scheme']:<22} {tool:<15} failed (exit {run['returncode']}), log: {run['log']}"
                )
                continue
            print(
                f"{result['scheme']:<22} {tool:<15} {run['wall_s']:7.1f} {run['sync_s']:7.1f} "
                f"{run['input_gb_per_s']:7.3f} {run['peak_rss_bytes'] / GB:11.2f} "
                f"{run['peak_tree_anon_bytes'] / GB:7.2f} {run['output_bytes'] / GB:6.2f}  "
                f"{comparison if tool == 'quantgate' else ''}"
            )
    print()
    for result in results["schemes"]:
        found = result.get("ratios")
        if not found:
            continue
        print(f"{result['scheme']}:")
        print(
            f"  disk limit (cold read then fsync'd write): {found['io_limit_s']:.1f} s = "
            f"{found['io_limit_input_gb_per_s']:.2f} GB/s of input "
            f"(overlapped: {found['io_limit_overlapped_s']:.1f} s)"
        )
        for key, label in (
            ("speedup_vs_llmcompressor", "throughput quantgate / llm-compressor"),
            ("fraction_of_io_limit", "throughput quantgate / disk limit"),
            ("peak_rss_per_shard", "peak RSS / shard size"),
        ):
            if key in found:
                r = found[key]
                sign = ">=" if r["better"] == "higher" else "<="
                print(
                    f"  {label:<40} {r['value']:6.2f}  (target {sign} {r['target']:g}: "
                    f"{'meets' if r['meets'] else 'MISSES'})"
                )
        print(f"  {'peak RSS / model size':<40} {found['peak_rss_per_model']:6.2f}")
        for key, label in (
            ("speedup_vs_llmcompressor_after_startup", "after start-up: quantgate / llm-compr."),
            ("fraction_of_io_limit_after_startup", "after start-up: quantgate / disk limit"),
        ):
            if key in found:
                print(f"  {label:<40} {found[key]:6.2f}")
        if "speedup_vs_llmcompressor_wall_only" in found:
            print(
                f"  {'(wall only, without the sync)':<40} {found['speedup_vs_llmcompressor_wall_only']:6.2f}"
            )
        comparison = result.get("comparison")
        if comparison and comparison["config_differences"]:
            print(
                "  quantization_config differs (quantgate, llm-compressor): "
                f"{comparison['config_differences']}"
            )


def record_tables(results: dict) -> tuple[list[Table], list[str]]:
    """The printed report as Markdown tables (for bench/record.py), and its conditions as notes."""
    source, disk = results["source"], results["disk"]
    runs, ratio_rows = [], []
    for result in results["schemes"]:
        summary = result.get("comparison", {}).get("summary", "not compared")
        for tool, run in result["runs"].items():
            if "error" in run:
                failed = f"failed (exit {run['returncode']})"
                runs.append((result["scheme"], tool, None, None, None, None, None, None, failed))
                continue
            runs.append((
                result["scheme"], tool, f"{run['wall_s']:.1f}", f"{run['sync_s']:.1f}", f"{run['input_gb_per_s']:.3f}",
                f"{run['peak_rss_bytes'] / GB:.2f}", f"{run['peak_tree_anon_bytes'] / GB:.2f}",
                f"{run['output_bytes'] / GB:.2f}", summary if tool == "quantgate" else "",
            ))  # fmt: skip
        found = result.get("ratios") or {}
        for key, label in (
            ("speedup_vs_llmcompressor", "throughput quantgate / llm-compressor"),
            ("fraction_of_io_limit", "throughput quantgate / disk limit"),
            ("peak_rss_per_shard", "peak RSS / shard size"),
            ("peak_rss_per_model", "peak RSS / model size"),
            ("speedup_vs_llmcompressor_after_startup", "after start-up: quantgate / llm-compressor"),
            ("fraction_of_io_limit_after_startup", "after start-up: quantgate / disk limit"),
        ):
            if key in found:
                r = found[key]
                if isinstance(r, dict):
                    target = f"{'>=' if r['better'] == 'higher' else '<='} {r['target']:g}"
                    ratio_rows.append((result["scheme"], label, f"{r['value']:.2f}", target, r["meets"]))
                else:
                    ratio_rows.append((result["scheme"], label, f"{r:.2f}", "", None))
    columns = ("scheme", "tool", "wall s", "+ sync s", "input GB/s", "peak RSS GB", "anon GB", "output GB", "outputs")
    reads = ", ".join(
        f"{r['gb_per_s']:.2f} GB/s ({r['streams']} stream{'s' * (r['streams'] > 1)})" for r in disk["reads"]
    )
    notes = [
        f"synthetic checkpoint: {source['bytes'] / GB:.2f} GB BF16 in {source['shards']} shards of <= "
        f"{results['args']['shard_gb']:g} GB, {source['tensors']} tensors; workers {results['args']['workers']}",
        f"disk: cold read {reads}; fsync'd write {disk['write_gb_per_s']:.2f} GB/s",
        "start-up (interpreter + imports, cold page cache): "
        + ", ".join(f"{tool} {seconds:.1f} s" for tool, seconds in results["startup"].items()),
    ]
    ratios_table = Table("ratios", ("scheme", "ratio", "value", "target", "meets"), ratio_rows)
    return [Table("runs", columns, runs), ratios_table], notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recording = start_recording("quantize_throughput", args.record) if args.record else None
    sys.path.insert(0, str(REPO))  # quant/ for the schemes (installed editable too)
    peer_python = None if args.skip_peer else ensure_peer_venv(args.peer_venv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="quantgate-bench-", dir=args.workdir))
    results: dict = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "workdir": str(work),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),  # other work on the machine skews every number
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    try:
        print(f"writing a {args.size_gb:g} GB synthetic checkpoint into {work} ...", flush=True)
        start = time.perf_counter()
        source = make_checkpoint(work / "synthetic-moe", args.size_gb, args.shard_gb)
        source["generate_s"] = time.perf_counter() - start
        results["source"] = source
        model = work / "synthetic-moe"
        print("measuring the disk ...", flush=True)
        results["disk"] = disk_limits(model, work, args.workers, source["bytes"])
        print("measuring start-up ...", flush=True)
        results["startup"] = start_up(model, peer_python)
        results["schemes"] = []
        for scheme in args.schemes:
            print(f"{scheme}:", flush=True)
            result = run_scheme(scheme, args, model, work, peer_python, source)
            result["ratios"] = ratios(result, source, results["disk"], args.shard_gb, results["startup"])
            results["schemes"].append(result)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"\nresults: {args.json}")
    if recording:
        tables, notes = record_tables(results)
        recording.write(tables, data=results, notes=notes)
    failed = any("error" in run for r in results["schemes"] for run in r["runs"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
