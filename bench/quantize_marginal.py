"""Marginal quantization throughput: bench/quantize_throughput.py at two sizes, per extra GB.

A run's time is a fixed part (interpreter start, imports, planning, the last shard's tail) plus a
part that grows with the checkpoint. On a 2 TB checkpoint only the second part counts, and a
4 GB benchmark on a small machine is dominated by the first. This script runs the throughput
benchmark twice, on synthetic checkpoints of two sizes (each from a dropped page cache, each
with its own disk measurement), and compares the slopes: extra seconds per extra input GB, for
each tool and for the disk's limit (the limit's seconds at each size, from that run's disk).
Everything is measured end to end; nothing is subtracted.

  marginal throughput quantgate / llm-compressor = peer's extra s per GB / quantgate's extra s per GB
  marginal throughput quantgate / disk limit     = the limit's extra s per GB / quantgate's

Usage: python bench/quantize_marginal.py [--sizes-gb 4.2,8.4] [--json PATH] [--record [DIR]]
           [any other bench/quantize_throughput.py option but --size-gb and --json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import quantize_throughput
from record import Table, add_record_argument, start_recording

GB = 1e9


def slopes(small: dict, large: dict) -> dict:
    """Per scheme: extra durable seconds per extra input GB for each tool and the disk limit, and the ratios."""
    extra_gb = (large["source"]["bytes"] - small["source"]["bytes"]) / GB
    if extra_gb <= 0:
        raise ValueError("the second size must be larger than the first")
    found = {}
    for a, b in zip(small["schemes"], large["schemes"], strict=True):
        runs = {}
        for tool in a["runs"]:
            if "error" in a["runs"][tool] or "error" in b["runs"].get(tool, {"error": 1}):
                continue
            runs[tool] = (b["runs"][tool]["durable_s"] - a["runs"][tool]["durable_s"]) / extra_gb
        if "quantgate" not in runs or not a["ratios"] or not b["ratios"]:
            continue
        limit = (b["ratios"]["io_limit_s"] - a["ratios"]["io_limit_s"]) / extra_gb
        entry = {
            "extra_gb": extra_gb,
            "s_per_extra_gb": runs | {"disk limit": limit},
            "fraction_of_io_limit": limit / runs["quantgate"],
        }
        if "llm-compressor" in runs:
            entry["speedup_vs_llmcompressor"] = runs["llm-compressor"] / runs["quantgate"]
        found[a["scheme"]] = entry
    return found


def print_slopes(found: dict, sizes: list[float]) -> None:
    print(f"\nmarginal throughput, {sizes[0]:g} GB -> {sizes[1]:g} GB (extra seconds per extra input GB, durable):")
    for scheme, entry in found.items():
        per_gb = ", ".join(f"{tool} {s:.2f} s" for tool, s in entry["s_per_extra_gb"].items())
        print(f"{scheme}: {per_gb}")
        if "speedup_vs_llmcompressor" in entry:
            value = entry["speedup_vs_llmcompressor"]
            verdict = "meets" if value >= quantize_throughput.MIN_SPEEDUP_VS_PEER else "MISSES"
            print(f"  marginal quantgate / llm-compressor   {value:6.2f}  (target >= 6: {verdict})")
        value = entry["fraction_of_io_limit"]
        verdict = "meets" if value >= quantize_throughput.MIN_FRACTION_OF_IO_LIMIT else "MISSES"
        print(f"  marginal quantgate / disk limit       {value:6.2f}  (target >= 0.5: {verdict})")


def record_tables(runs: list[dict], found: dict, sizes: list[float]) -> list[Table]:
    """Durable seconds at each size and the slopes, per scheme and tool, as Markdown tables."""
    gb = [f"{run['source']['bytes'] / GB:.2f} GB" for run in runs]
    by_scheme = [{s["scheme"]: s for s in run["schemes"]} for run in runs]
    rows = []
    for scheme, entry in found.items():
        for tool, per_gb in entry["s_per_extra_gb"].items():
            if tool == "disk limit":
                at = [run[scheme]["ratios"]["io_limit_s"] for run in by_scheme]
            else:
                at = [run[scheme]["runs"][tool]["durable_s"] for run in by_scheme]
            rows.append((scheme, tool, f"{at[0]:.1f}", f"{at[1]:.1f}", f"{per_gb:.2f}"))
    ratios = []
    for scheme, entry in found.items():
        if "speedup_vs_llmcompressor" in entry:
            ratios.append((scheme, "marginal quantgate / llm-compressor", f"{entry['speedup_vs_llmcompressor']:.2f}",
                           f">= {quantize_throughput.MIN_SPEEDUP_VS_PEER:g}"))  # fmt: skip
        ratios.append((scheme, "marginal quantgate / disk limit", f"{entry['fraction_of_io_limit']:.2f}",
                       f">= {quantize_throughput.MIN_FRACTION_OF_IO_LIMIT:g}"))  # fmt: skip
    columns = ("scheme", "tool", f"durable s at {gb[0]}", f"durable s at {gb[1]}", "s per extra GB")
    return [
        Table(f"durable seconds, {sizes[0]:g} GB -> {sizes[1]:g} GB requested", columns, rows),
        Table("marginal ratios", ("scheme", "ratio", "value", "target"), ratios),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    parser.add_argument("--sizes-gb", default="4.2,8.4", help="two checkpoint sizes, GB (default 4.2,8.4)")
    parser.add_argument("--json", type=Path, help="write both runs and the slopes here")
    add_record_argument(parser)
    args, rest = parser.parse_known_args(argv)
    recording = start_recording("quantize_marginal", args.record) if args.record else None
    sizes = [float(s) for s in args.sizes_gb.split(",")]
    if len(sizes) != 2 or not 0 < sizes[0] < sizes[1]:
        parser.error("--sizes-gb: two sizes, the first smaller")
    runs = []
    with tempfile.TemporaryDirectory(prefix="quantgate-marginal-") as scratch:
        for size in sizes:
            out = Path(scratch) / f"{size:g}.json"
            code = quantize_throughput.main([*rest, "--size-gb", str(size), "--json", str(out)])
            if code != 0:
                return code
            runs.append(json.loads(out.read_text()))
    found = slopes(*runs)
    print_slopes(found, sizes)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"sizes_gb": sizes, "runs": runs, "marginal": found}, indent=2) + "\n")
        print(f"\nresults: {args.json}")
    if recording:
        recording.write(record_tables(runs, found, sizes), data={"sizes_gb": sizes, "runs": runs, "marginal": found})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
