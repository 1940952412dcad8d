"""sha256 of checkpoint files, computed once and remembered.

A file's hash is kept in a JSON cache file under its real path, with the size, mtime (ns) and inode
it had when it was hashed; it is reused only while all three are unchanged. Files in a Hugging
Face cache snapshot are links to blobs named by their LFS sha256: that name is the hash, recorded
by the Hub, and nothing is read. `verify=True` hashes every file in full (and refreshes the cache).

The cache lives at $QUANTGATE_CACHE/file_sha256.json (default ~/.cache/quantgate). It is written
to a temporary name and renamed into place; a cache that cannot be read is started afresh.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from quantgate.core.checkpoint import sha256_file

CACHE_NAME = "file_sha256.json"
CACHE_VERSION = 1
LFS_BLOB = re.compile(r"^[0-9a-f]{64}$")  # a Hub cache blob named by its LFS sha256


def default_cache_file() -> Path:
    root = os.environ.get("QUANTGATE_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "quantgate"
    return Path(root) / CACHE_NAME


class FileHashes:
    """sha256 per file, from the cache when the file is unchanged (path, size, mtime_ns, inode)."""

    def __init__(self, cache_file: Path | None = None, verify: bool = False) -> None:
        self.cache_file = cache_file or default_cache_file()
        self.verify = verify
        self._entries = self._read()
        self._dirty = False

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            return {}
        return data.get("files", {})

    def sha256(self, path: Path) -> str:
        real = path.resolve()
        if not self.verify and path.is_symlink() and LFS_BLOB.match(real.name) and real.parent.name == "blobs":
            return real.name
        stat = real.stat()
        key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}
        entry = self._entries.get(str(real))
        if not self.verify and entry is not None and {k: entry.get(k) for k in key} == key:
            return entry["sha256"]
        digest = sha256_file(real)
        after = real.stat()
        if (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns):  # not changed while read
            self._entries[str(real)] = key | {"sha256": digest}
            self._dirty = True
        return digest

    def save(self) -> None:
        if not self._dirty:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(f".{self.cache_file.name}.tmp-{os.getpid()}")
        data = {"version": CACHE_VERSION, "files": dict(sorted(self._entries.items()))}
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.cache_file)
        self._dirty = False
