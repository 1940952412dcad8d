"""Streaming safetensors I/O: read a mapped shard front to back, write one tensor at a time.

`ShardReader` maps a source shard and hands out its tensors' bytes in file order without copying
them (the shard was usually just read into the page cache by quant.prefetch, which hashes it).
`ShardWriter` lays the output out up front from the tensors' shapes and dtypes, exactly as
`safetensors.torch.save_file` would (same header, same order, same bytes), writes the header,
and then each tensor's bytes at their place as they are produced, so an output shard is never
held in memory. Writeback to disk is started every WRITEBACK_EVERY bytes rather than left to the
kernel's dirty-page thresholds, so the disk writes while the CPU quantizes. The shard's sha256 is
taken when it is complete, reading it back from the page cache.
"""

from __future__ import annotations

import ctypes
import json
import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from quantgate.core.checkpoint import sha256_file
from quantgate.core.errors import InputError

# safetensors' spelling of each dtype, in the order of its Dtype enum (save_file sorts by it, descending)
DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "F8_E5M2": torch.float8_e5m2,
    "F8_E4M3": torch.float8_e4m3fn,
    "I16": torch.int16,
    "U16": torch.uint16,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I32": torch.int32,
    "U32": torch.uint32,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "U64": torch.uint64,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
RANK = {name: rank for rank, name in enumerate(DTYPES)}
READ_CHUNK = 16 << 20
WRITEBACK_EVERY = 64 << 20
SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h


def _sync_file_range() -> ctypes._CFuncPtr | None:
    """libc's sync_file_range (Linux), or None."""
    function = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file's dirty pages now (without waiting for them)."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, SYNC_FILE_RANGE_WRITE)


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # byte offset in the file (header included)
    nbytes: int


def nbytes_of(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def read_header(path: Path) -> tuple[int, list[Entry]]:
    """(header bytes incl. the length prefix, tensors in file order); the file must be exactly covered."""
    with path.open("rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    data_start = 8 + header_len
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        entries.append(Entry(name, DTYPES[info["dtype"]], tuple(info["shape"]), data_start + begin, end - begin))
    entries.sort(key=lambda e: e.start)
    position = data_start
    for entry in entries:
        if entry.start != position:
            raise InputError(f"{path}: tensor {entry.name} does not start where the previous one ends")
        position += entry.nbytes
    if position != path.stat().st_size:
        raise InputError(f"{path}: truncated or padded ({path.stat().st_size} bytes, header says {position})")
    return data_start, entries


class ShardReader:
    """One source shard, mapped copy-on-write (never written), its tensors' bytes taken in file order.

    Pages before the range being read are dropped from the process as it advances (they stay in
    the page cache), so resident memory stays at about one read, not one shard."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data_start, self.entries = read_header(path)
        with path.open("rb") as handle:
            self._map: mmap.mmap | None = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        self._map.madvise(mmap.MADV_SEQUENTIAL)
        self._released = 0  # bytes before this page-aligned offset are no longer mapped in

    def read(self, entry: Entry, offset: int, nbytes: int) -> torch.Tensor:
        """`nbytes` of `entry` starting `offset` bytes in, as uint8 (valid until the next read)."""
        if offset + nbytes > entry.nbytes:
            raise ValueError(f"{self.path}: read past the end of {entry.name}")
        start = entry.start + offset
        if start < self._released:
            raise ValueError(f"{self.path}: out-of-order read of {entry.name}")
        self._release(start)
        if nbytes == 0:
            return torch.empty(0, dtype=torch.uint8)
        return torch.frombuffer(self._map, dtype=torch.uint8, count=nbytes, offset=start)

    def _release(self, end: int) -> None:
        end -= end % mmap.PAGESIZE
        if end > self._released:
            self._map.madvise(mmap.MADV_DONTNEED, self._released, end - self._released)
            self._released = end

    def close(self) -> None:
        """Unmaps the shard (once the last tensor read from it is gone)."""
        if self._map is not None:
            self._release(len(self._map))
            self._map = None

    abort = close


def layout(tensors: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict[str, str]) -> tuple[bytes, dict]:
    """save_file's layout: (header bytes with length prefix, name -> (file offset, nbytes))."""
    order = sorted(tensors, key=lambda t: (-RANK[NAMES[t[1]]], t[0]))
    header: dict = {"__metadata__": metadata} if metadata else {}
    places = {}
    offset = 0
    for name, dtype, shape in order:
        size = nbytes_of(dtype, shape)
        header[name] = {"dtype": NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        places[name] = (offset, size)
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    prefix = len(text).to_bytes(8, "little") + text
    return prefix, {name: (len(prefix) + start, size) for name, (start, size) in places.items()}


class ShardWriter:
    """Writes an output shard tensor by tensor (any order, any pieces) into its precomputed layout."""

    def __init__(
        self, path: Path, tensors: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict[str, str]
    ) -> None:
        self.path = path
        prefix, self.places = layout(tensors, metadata)
        self.size = len(prefix) + sum(size for _, size in self.places.values())
        self.written = dict.fromkeys(self.places, 0)
        self._unflushed = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._pwrite(prefix, 0)

    def write(self, name: str, data: torch.Tensor, offset: int = 0) -> None:
        """`data`'s bytes at `offset` bytes into tensor `name`."""
        raw = data.contiguous().view(-1).view(torch.uint8) if data.numel() else data.new_empty(0, dtype=torch.uint8)
        start, size = self.places[name]
        if offset + raw.numel() > size:
            raise ValueError(f"{self.path}: {name} overflows its {size} bytes")
        self._pwrite(memoryview(raw.numpy()), start + offset)
        self.written[name] += raw.numel()
        self._unflushed += raw.numel()
        if self._unflushed >= WRITEBACK_EVERY:
            start_writeback(self._fd)
            self._unflushed = 0

    def _pwrite(self, data: bytes | memoryview, position: int) -> None:
        done = 0
        while done < len(data):
            done += os.pwrite(self._fd, data[done:], position + done)

    def close(self) -> str:
        """Checks every tensor is whole; returns the file's sha256 and starts its writeback."""
        short = [name for name, size in self.places.items() if self.written[name] != size[1]]
        if short:
            raise RuntimeError(f"{self.path}: tensors not fully written: {short[:3]}")
        sha = sha256_file(self.path)  # read back from the page cache
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)  # writes back the rest now
        os.close(self._fd)
        self._fd = -1
        return sha

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
