"""Where `quantgate quantize` spends its time: one in-process run (one worker) under cProfile.

The page cache is dropped first (bench/measure.py), so reads are cold. Time is reported per
phase by the cumulative time of the functions that do it, found by name in the profile, so the
phases follow quant/ as it is (a function it no longer calls shows as absent):

  hash       sha256 updates in this process: the output shards once written, the index and the
             small side files (the source shards are hashed by quant.prefetch's child processes,
             outside this profile)
  wait       lock waits: for those children's hashes
  headers    quant.source.load_source: safetensors headers and checks
  read       FileIO.readinto: the output shards back from the page cache for their hash (the
             source shards are mapped: reading them shows up in absmax, as page faults)
  absmax     quant.kernels.absmax_blocks: max |x| per scale block, which is also the NaN/Inf check
  finite     quant.kernels.all_finite: the NaN/Inf check of tensors kept as they are
  qparams    compressed-tensors' calculate_qparams: scales from the maxima
  quantize   quant.kernels.quant_int / quant_fp8_block: fused divide, round, clamp and pack
  reference  quant.rtn.compress_weight: compressed-tensors' own path (weights without a fused
             kernel, and once per weight shape to plan the output layout)
  write      os.pwrite: writing output tensors at their place in the output shard

Usage: .venv/bin/python bench/profile_quantgate.py MODEL_DIR --scheme NAME [--out DIR] [--top 15]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

from measure import drop_page_cache

REPO = Path(__file__).resolve().parent.parent

# phase -> (file name suffix, function name) whose cumulative time is the phase's
PHASES: dict[str, tuple[str, str]] = {
    "hash": ("~", "<method 'update' of '_hashlib.HASH' objects>"),
    "wait": ("~", "<method 'acquire' of '_thread.lock' objects>"),
    "headers": ("quant/source.py", "load_source"),
    "read": ("~", "<method 'readinto' of '_io.FileIO' objects>"),
    "absmax": ("quant/kernels.py", "absmax_blocks"),
    "finite": ("quant/kernels.py", "all_finite"),
    "qparams": ("quantization/utils/helpers.py", "calculate_qparams"),
    "quantize": ("quant/kernels.py", "quant_int"),
    "quantize_fp8": ("quant/kernels.py", "quant_fp8_block"),
    "reference": ("quant/rtn.py", "compress_weight"),
    "write": ("~", "<built-in method posix.pwrite>"),
}


def phase_seconds(stats: pstats.Stats) -> dict[str, float | None]:
    found: dict[str, float | None] = dict.fromkeys(PHASES)
    for (filename, _, function), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        for phase, (suffix, name) in PHASES.items():
            if function == name and filename.endswith(suffix):
                found[phase] = (found[phase] or 0.0) + cumulative
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--scheme", required=True)
    parser.add_argument("--out", type=Path, help="output directory (default: a temporary one, removed)")
    parser.add_argument("--top", type=int, default=15, help="also print the N functions with most own time")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))  # quant/ is not necessarily installed
    from quant.build import QuantizeRequest, quantize
    from quant.schemes import get_scheme

    scratch = Path(tempfile.mkdtemp(prefix="quantgate-profile-", dir=args.model.parent))
    out = args.out or scratch / "out"
    inputs = sorted(args.model.glob("*.safetensors"))
    input_bytes = sum(p.stat().st_size for p in inputs)
    try:
        drop_page_cache(inputs)
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.runcall(quantize, QuantizeRequest(args.model.resolve(), get_scheme(args.scheme), out=out.resolve()))
        total = time.perf_counter() - start
        output_bytes = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    finally:
        if args.out is None:
            shutil.rmtree(scratch, ignore_errors=True)
    stats = pstats.Stats(profile)
    phases = phase_seconds(stats)
    print(
        f"quantgate {args.scheme}: {total:.1f} s for {input_bytes / 1e9:.2f} GB in, "
        f"{output_bytes / 1e9:.2f} GB out "
        f"({input_bytes / total / 1e9:.3f} GB/s), one worker, cold cache, under cProfile"
    )
    for phase, seconds in phases.items():
        shown = "absent" if seconds is None else f"{seconds:7.2f} s  {100 * seconds / total:5.1f} %"
        print(f"  {phase:<9} {shown}")
    accounted = sum(s for s in phases.values() if s is not None)  # the phases are disjoint
    print(
        f"  {'other':<9} {total - accounted:7.2f} s  {100 * (total - accounted) / total:5.1f} %"
        "  (imports, planning, copying, Python overhead)"
    )
    if args.top:
        print(f"\ntop {args.top} functions by own time:")
        stats.sort_stats("tottime").print_stats(args.top)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "scheme": args.scheme,
                    "total_s": total,
                    "input_bytes": input_bytes,
                    "output_bytes": output_bytes,
                    "phases_s": phases,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
