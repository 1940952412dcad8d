"""Names from configs and indexes that become paths: one component, never a way out of its folder.

A shard name from `model.safetensors.index.json`, a variant, suite or plan name, a plan's
`checkpoint`: each is joined to a folder quantgate writes or reads (`out / shard`,
`results / variant / suite`). `path_component` accepts only a single plain file or folder name, so
that `../x`, `/etc/x`, `a/b` or `..` cannot reach outside that folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from quantgate.core.errors import InputError


def path_component(value: object, *, file: Path | str, field: str) -> str:
    """`value` if it is one plain path component; else an InputError naming the file and field."""
    if not isinstance(value, str):
        raise InputError(f"{file}: {field}: {value!r} is not a name (a string)")
    reason = component_problem(value)
    if reason is not None:
        raise InputError(f"{file}: {field}: {value!r} {reason}")
    return value


def component_problem(value: str) -> str | None:
    """Why `value` is not one plain path component, or None."""
    if not value or not value.strip():
        return "is empty"
    if value in (".", ".."):
        return "is not a name (it refers to a folder)"
    if value.startswith("/") or Path(value).is_absolute():
        return "is an absolute path, not a name"
    if "/" in value or "\\" in value:
        return "holds a path separator; give one file or folder name"
    if "\x00" in value or any(ord(c) < 32 for c in value):
        return "holds a control character"
    return None


def _name_field(value: str) -> str:
    reason = component_problem(value)
    if reason is not None:
        raise ValueError(f"{value!r} {reason}")
    return value


# A config field that becomes a folder or file name: the typed config's error names the file and key.
PathName = Annotated[str, AfterValidator(_name_field)]


def output_folder(path: Path, *, option: str) -> Path:
    """`path` can become a folder quantgate writes: it is a folder or absent, and its nearest existing
    ancestor is a writable folder. Otherwise an InputError naming the option, before any work."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: exists and is not a folder")
    ancestor = path
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise InputError(f"{option} {path}: {ancestor} is a dangling link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{option} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: {ancestor} is not writable")
    return path
