"""Measurements for the quantization benchmark: a cold page cache, the disk's limits, a child's cost.

- `drop_page_cache`: the kernel's drop_caches when writable (root), else posix_fadvise(DONTNEED)
  on the given files. Under a VM the host may still cache the disk: what is dropped is the guest's.
- `cold_read`: read files from a dropped cache in 16 MiB chunks with 1 or more parallel streams.
- `fsync_write`: write incompressible bytes to a file and fsync it, timed until fsync returns.
- `cold_start`: a command's wall time from a dropped page cache (a tool's interpreter and imports).
- `run_measured`: run a command; its wall time, its CPU time (user + system, its whole tree as
  reaped: contention on a shared machine changes it much less than wall time), the time of the
  `sync` after it (its output made durable), and its peak resident memory from /proc/PID/status
  every 50 ms: the sum of VmRSS over its process tree (and of RssAnon, without mmapped files and
  libraries), and each process's VmHWM, the kernel's own high-water mark, which sampling cannot
  miss. (wait4's ru_maxrss is not used: a child started by vfork+exec inherits its parent's
  high-water mark, here the benchmark's.)
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

CHUNK = 16 << 20
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
SAMPLE_INTERVAL_S = 0.05


def drop_page_cache(files: list[Path]) -> str:
    """Drop the page cache; returns the method used ("drop_caches" or "fadvise")."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
        return "drop_caches"
    except OSError:
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        return "fadvise"


def _read_file(path: Path) -> int:
    buffer = bytearray(CHUNK)
    total = 0
    with path.open("rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            total += n
    return total


def cold_read(files: list[Path], streams: int = 1) -> dict:
    """GB/s reading `files` cold, `streams` files at a time."""
    method = drop_page_cache(files)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=streams) as pool:
        total = sum(pool.map(_read_file, files))
    seconds = time.perf_counter() - start
    return {
        "bytes": total,
        "seconds": seconds,
        "gb_per_s": total / seconds / 1e9,
        "streams": streams,
        "cache_drop": method,
    }


def cold_start(command: list[str], files: list[Path], cwd: Path | None = None) -> float:
    """Wall seconds of `command` (an interpreter importing a tool's modules) from a dropped page cache."""
    drop_page_cache(files)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=cwd)
    return time.perf_counter() - start


def fsync_write(path: Path, nbytes: int) -> dict:
    """GB/s writing `nbytes` of random bytes to `path` (then removed), fsync included."""
    block = os.urandom(64 << 20)  # random: neither the guest nor the host can compress it
    os.sync()
    start = time.perf_counter()
    written = 0
    with path.open("wb", buffering=0) as handle:
        while written < nbytes:
            written += handle.write(memoryview(block)[: min(len(block), nbytes - written)])
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return {"bytes": written, "seconds": seconds, "gb_per_s": written / seconds / 1e9}


@dataclass
class RunMeasurement:
    command: list[str]
    returncode: int
    wall_s: float  # the command itself
    sync_s: float  # the `sync` right after it: writing back what it left dirty
    peak_tree_rss_bytes: int  # max over samples of the tree's summed VmRSS
    peak_tree_anon_bytes: int  # same for RssAnon: without file-backed pages (mmapped safetensors, libraries)
    max_process_hwm_bytes: int  # the largest VmHWM of one process of the tree
    sum_process_hwm_bytes: int  # VmHWM summed over the tree's processes: an upper bound of the tree's peak
    processes: int  # distinct processes seen in the tree
    samples: int
    cpu_s: float = 0.0  # user + system CPU time of the command and the children it waited for (os.times)

    @property
    def durable_s(self) -> float:
        """Until the output is on disk: what the disk's fsync'd limit is compared against."""
        return self.wall_s + self.sync_s

    @property
    def peak_rss_bytes(self) -> int:
        """The tree's peak RSS, from below: no sample missed a single process's peak."""
        return max(self.peak_tree_rss_bytes, self.max_process_hwm_bytes)

    def as_dict(self) -> dict:
        return asdict(self) | {"durable_s": self.durable_s, "peak_rss_bytes": self.peak_rss_bytes}


_STATUS_FIELDS = ("VmRSS", "RssAnon", "VmHWM")


def _status_bytes(pid: int) -> dict[str, int] | None:
    """VmRSS, RssAnon and VmHWM of a live process, in bytes; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in _STATUS_FIELDS:
            found[key] = int(value.split()[0]) * 1024  # reported in kB
    return found if len(found) == len(_STATUS_FIELDS) else None  # a zombie has no memory lines


class _TreeSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.stop = threading.Event()
        self.peak_rss = self.peak_anon = self.samples = 0
        self.hwm: dict[int, int] = {}  # pid -> its last seen VmHWM

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                pids = [self.root.pid, *(child.pid for child in self.root.children(recursive=True))]
            except psutil.Error:
                break
            rss = anon = 0
            for pid in pids:
                status = _status_bytes(pid)
                if status is None:
                    continue
                rss += status["VmRSS"]
                anon += status["RssAnon"]
                self.hwm[pid] = max(self.hwm.get(pid, 0), status["VmHWM"])
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_anon = max(self.peak_anon, anon)
            self.samples += 1
            self.stop.wait(SAMPLE_INTERVAL_S)


def run_measured(
    command: list[str], log: Path, cwd: Path | None = None, env: dict | None = None
) -> RunMeasurement:
    """Run `command` (stdout and stderr to `log`) and measure it; see the module docstring."""
    before = os.times()
    with log.open("wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        sampler = _TreeSampler(process.pid)
        sampler.start()
        process.wait()
        wall = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
    after = os.times()
    start = time.perf_counter()
    os.sync()
    sync_s = time.perf_counter() - start
    return RunMeasurement(
        command=[str(c) for c in command],
        returncode=process.returncode,
        wall_s=wall,
        sync_s=sync_s,
        peak_tree_rss_bytes=sampler.peak_rss,
        peak_tree_anon_bytes=sampler.peak_anon,
        max_process_hwm_bytes=max(sampler.hwm.values(), default=0),
        sum_process_hwm_bytes=sum(sampler.hwm.values()),
        processes=len(sampler.hwm),
        samples=sampler.samples,
        cpu_s=(after.children_user - before.children_user) + (after.children_system - before.children_system),
    )
