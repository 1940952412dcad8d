"""Reuse freed memory for the large tensors GPTQ allocates per unit (glibc only).

GPTQ allocates and frees the same large tensors for every expert: the Hessian and its factors,
copies of the weight, the quantized result. By default glibc serves allocations above its mmap
threshold (128 KiB, raised dynamically up to 32 MiB) with fresh mappings that are unmapped on free,
so every expert's tensors are faulted in and zeroed by the kernel again. On the 1 GB synthetic
bench (bench/gptq_large.py) that was 1.8 M minor page faults and 9.5 s of system time out of
85 s CPU. With the thresholds below, allocations up to `largest` come from the heap and freed
memory is reused: 0.4 M faults, 3.3 s of system time, byte-identical output, peak RSS +3 %.
Larger tensors (a 7168-wide Hessian in float64 is 411 MB) are still mapped; their cost is small
next to the O(n^3) factorization they feed.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, <malloc.h>
M_MMAP_THRESHOLD = -3
LARGEST = 128 << 20  # bytes: allocations up to this size come from the heap
KEEP = 512 << 20  # bytes: free memory at the heap's top kept rather than returned to the system


def reuse_freed_memory(largest: int = LARGEST, keep: int = KEEP) -> bool:
    """Set glibc's mmap and trim thresholds for this process; False where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return mallopt(M_MMAP_THRESHOLD, largest) == 1 and mallopt(M_TRIM_THRESHOLD, keep) == 1
