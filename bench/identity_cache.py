"""Time of a second `eval` identity of a large checkpoint without a manifest: full sha256 of every
file each time (what eval did before the file-hash cache; `eval --verify` now) against the cached
per-file hash (keyed by path, size, mtime and inode).

A synthetic checkpoint is written to a temporary folder: config.json (the bundled model's) and one
`model.safetensors` of SIZE GB of random bytes behind a valid safetensors header (one U8 tensor).
It is removed afterwards. The file is in the page cache when it is hashed (it was just written), so
the full hash runs at sha256's speed, not the disk's: the figures are a lower bound for a cold disk.

Usage: python bench/identity_cache.py [--size-gb 2] [--dir DIR] [--record [DIR]]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

from record import Table, add_record_argument, start_recording

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 1 << 26


def write_synthetic(folder: Path, size: int) -> Path:
    folder.mkdir(parents=True)
    shutil.copyfile(ROOT / "models" / "kimi-k2-tiny" / "config.json", folder / "config.json")
    header = json.dumps({"blob": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    with (folder / "model.safetensors").open("wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        left = size
        while left:
            n = min(CHUNK, left)
            handle.write(os.urandom(n))
            left -= n
    return folder


def timed(function, *args, **kwargs) -> tuple[float, str]:
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - start, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of the synthetic shard (GB, 1e9 bytes)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write it (default: a temporary folder)")
    add_record_argument(parser)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from quantgate.core.checkpoint import checkpoint_identity

    recording = start_recording("identity_cache", args.record) if args.record else None
    size = int(args.size_gb * 1e9)
    work = Path(tempfile.mkdtemp(prefix="quantgate-bench-identity-", dir=args.dir))
    try:
        checkpoint = write_synthetic(work / "ckpt", size)
        cache = work / "file_sha256.json"
        full_1, identity = timed(checkpoint_identity, checkpoint, verify=True, cache_file=cache)
        full_2, again = timed(checkpoint_identity, checkpoint, verify=True, cache_file=cache)
        cached, cheap = timed(checkpoint_identity, checkpoint, cache_file=cache)
        assert identity == again == cheap
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        ("first eval (hashes every file)", round(full_1, 3)),
        ("second eval, before: full sha256 again (now: eval --verify)", round(full_2, 3)),
        ("second eval, after: cached per-file sha256", round(cached, 4)),
    ]
    for label, seconds in rows:
        print(f"{label:<62} {seconds:>9} s")
    print(f"sha256 rate {size / full_2 / 1e9:.2f} GB/s on {args.size_gb:g} GB (page cache)")
    if recording:
        recording.write(
            [Table(f"checkpoint identity, one {args.size_gb:g} GB shard", ("run", "seconds"), rows)],
            data={"size_bytes": size, "full_s": [full_1, full_2], "cached_s": cached},
            notes=["The shard is in the page cache (just written): full hashing runs at sha256 speed, "
                   "a cold disk is slower; the cached identity does not read the shard."],
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
