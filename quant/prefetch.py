"""Hash a source checkpoint's shards ahead of the quantizer, in child processes.

Reading and hashing the shards is the only part of a build that does not depend on the scheme,
and resolving a scheme imports compressed-tensors (and with it transformers), about 8 s of one
core on a 2-core machine. `SourceHasher` starts before that import: its children read the shards
in the order the quantizer will take them (`shard_order`), hash them (the sha256s are the
source's identity in the manifest) and leave them in the page cache, from which the quantizer
maps them. They are processes, not threads: a thread that reads and hashes in 16 MiB steps
takes the GIL back 100 times a second, which measured here slowed the import running beside it
by half; a child costs 0.1 s to start and nothing after.

The children stay at most `lookahead` bytes ahead of the hashes collected (`sha256`, which the
quantizer asks for when it has finished a shard), always at least one shard, so on a checkpoint
larger than memory the two stay close and each byte still comes from disk once. A shard whose
hash is asked for goes next, whatever the lookahead, so collecting in any order cannot deadlock. Each shard's
size and mtime are recorded when it is hashed; `sha256` fails if the file has changed since.

`python -m quant.prefetch` is the child: JSON lines in (a path each), JSON lines out
({"sha256", "size", "mtime_ns"} or {"error"}). Nothing here imports torch or compressed-tensors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from quantgate.core.checkpoint import INDEX_NAME, SINGLE_FILE_NAME, read_weight_map, sha256_file
from quantgate.core.errors import InputError

DEFAULT_LOOKAHEAD_FRACTION = 0.25  # of the memory available when the hasher starts
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # where `quant` and `quantgate` are importable from


@dataclass(frozen=True)
class Hashed:
    sha256: str
    size: int
    mtime_ns: int


def shard_order(paths: list[Path]) -> list[Path]:
    """Largest first (ties by name), so that the last shards to finish are the small ones."""
    return sorted(paths, key=lambda p: (-p.stat().st_size, p.name))


def available_memory() -> int:
    """MemAvailable from /proc/meminfo, bytes (a quarter of physical memory where that is absent)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def hash_file(path: Path) -> Hashed:
    """sha256 of a file, with the size and mtime it had before it was read."""
    before = path.stat()
    return Hashed(sha256_file(path), before.st_size, before.st_mtime_ns)


def source_shards(model: Path) -> list[Path]:
    """The shard files a checkpoint's index names, or its single `model.safetensors` when it has no index
    (none when the index is unreadable: load_source says why)."""
    if not (model / INDEX_NAME).exists() and (model / SINGLE_FILE_NAME).is_file():
        return [model / SINGLE_FILE_NAME]
    try:
        weight_map = read_weight_map(model)
    except InputError:
        return []
    return [model / name for name in sorted(set(weight_map.values()))]


def start_hasher(model: Path, workers: int) -> SourceHasher:
    """Hashing of a checkpoint's shards, started in the background: half as many children as the
    quantizer has workers (at least one), so that imports and quantizing keep cores of their own."""
    return SourceHasher(source_shards(model.resolve()), processes=max(1, workers // 2))


class SourceHasher:
    """Background sha256 of `paths`, in `shard_order`, `processes` at a time, `lookahead` bytes ahead."""

    def __init__(self, paths: list[Path], processes: int = 1, lookahead: int | None = None) -> None:
        self.order = shard_order([p for p in paths if p.is_file()])  # a missing shard is load_source's to report
        self.lookahead = lookahead if lookahead is not None else int(available_memory() * DEFAULT_LOOKAHEAD_FRACTION)
        self._sizes = {p: p.stat().st_size for p in self.order}
        self._results: dict[Path, Hashed | BaseException] = {}
        self._pending = list(self.order)  # not yet sent to a child, in order
        self._open: set[Path] = set()  # sent to a child, its hash not yet collected
        self._wanted: set[Path] = set()  # someone waits in sha256() for these
        self._stopped = False
        self._lock = threading.Condition()
        self._children: list[subprocess.Popen] = []
        self._threads = [
            threading.Thread(target=self._feed, args=(self._spawn(),), name=f"quantgate-hash-{i}", daemon=True)
            for i in range(min(processes, len(self.order)))
        ]
        for thread in self._threads:
            thread.start()

    def _spawn(self) -> subprocess.Popen:
        path = os.environ.get("PYTHONPATH")
        env = os.environ | {"PYTHONPATH": str(PACKAGE_ROOT) + (os.pathsep + path if path else "")}
        child = subprocess.Popen(
            [sys.executable, "-m", "quant.prefetch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self._children.append(child)
        return child

    def _take(self) -> Path | None:
        """The next shard to hash: one that is waited for (whatever the lookahead), else the next in
        order if it fits in the lookahead; None when there are none left."""
        with self._lock:
            while True:
                if self._stopped or not self._pending:
                    return None
                wanted = [p for p in self._pending if p in self._wanted]
                path = wanted[0] if wanted else self._pending[0]
                ahead = sum(self._sizes[p] for p in self._open)
                if wanted or not self._open or ahead + self._sizes[path] <= self.lookahead:
                    self._pending.remove(path)
                    self._open.add(path)
                    return path
                self._lock.wait()

    def _feed(self, child: subprocess.Popen) -> None:
        """One child: send it the next shard, read its answer, until none are left or it is stopped."""
        try:
            while (path := self._take()) is not None:
                child.stdin.write(json.dumps(str(path)) + "\n")
                child.stdin.flush()
                line = child.stdout.readline()
                if not line:  # killed by close(), or died
                    result: Hashed | BaseException = RuntimeError(f"hashing {path}: the hashing process exited")
                else:
                    answer = json.loads(line)
                    error = answer.get("error")
                    result = InputError(f"{path}: cannot be read ({error})") if error else Hashed(**answer)
                with self._lock:
                    self._results[path] = result
                    self._lock.notify_all()
        except (OSError, ValueError):  # the pipe closed under us by close()
            pass
        finally:
            with self._lock:
                self._lock.notify_all()
            try:
                child.stdin.close()  # the child's end of input: it exits
            except OSError:
                pass

    def sha256(self, path: Path) -> str:
        """The shard's sha256 (waits for it); InputError if it could not be read or has changed since.
        Collecting it lets the children read further ahead."""
        with self._lock:
            if path not in self._sizes:
                raise InputError(f"{path}: not a shard of this source")
            self._wanted.add(path)
            self._lock.notify_all()
            while path not in self._results:
                if self._stopped or not any(t.is_alive() for t in self._threads):
                    raise RuntimeError(f"hashing {path}: the source hasher stopped")
                self._lock.wait(timeout=1.0)
            self._wanted.discard(path)
            result = self._results[path]
            self._open.discard(path)
            self._lock.notify_all()
        if isinstance(result, BaseException):
            raise result
        now = path.stat()
        if (now.st_size, now.st_mtime_ns) != (result.size, result.mtime_ns):
            raise InputError(f"{path}: changed while being quantized")
        return result.sha256

    def close(self) -> None:
        """Stop the children (a shard being hashed is abandoned) and wait for them."""
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        for child in self._children:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()
        for thread in self._threads:
            thread.join()


def serve() -> None:
    """The child: hash each path read from stdin, answer on stdout."""
    for line in sys.stdin:
        try:
            answer = vars(hash_file(Path(json.loads(line))))
        except OSError as error:
            answer = {"error": error.strerror or str(error)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
