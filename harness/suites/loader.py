"""Suite files: a shipped suite's name (quantgate.core.shipped) or any path, validated by the pydantic
class of their `kind`.

Relative paths inside a suite (data files) resolve against the suite file's folder, then (`suites/...`)
the shipped suites. Every problem is an InputError naming the file and the key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

import harness.suites.catalog  # noqa: F401  (registers the suite kinds)
from harness.suites.base import SUITE_KINDS, SuiteConfig, suite_kind
from harness.suites.paths import is_suite_file
from quantgate.core.errors import InputError
from quantgate.core.shipped import resolve_data_path, shipped_root, shipped_suite_names
from quantgate.core.typed_yaml import describe, read_yaml_mapping


def suite_path(name_or_path: str | Path) -> Path:
    """A bare name -> the shipped suite of that name; anything else is a path."""
    text = str(name_or_path)
    if not is_suite_file(text):
        path = shipped_root() / f"{text}.yaml"
        if not path.is_file():
            close = difflib.get_close_matches(text, shipped_suite_names(), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(
                f"unknown suite {text!r}; {hint}shipped suites: {', '.join(shipped_suite_names())} (or give a path)"
            )
        return path
    path = Path(text)
    if not path.is_file():
        raise InputError(f"{path}: suite file not found")
    return path


def load_suite(name_or_path: str | Path) -> SuiteConfig:
    path = suite_path(name_or_path)
    raw = read_yaml_mapping(path)
    raw.setdefault("name", path.stem)
    return suite_from_fields(raw, path)


def suite_from_fields(raw: dict, source: Path | str, folder: Path | None = None) -> SuiteConfig:
    """A suite from its fields (a file's, or ones `quantgate eval --tasks` builds), validated as a file's
    would be; errors are named after `source`; relative paths resolve against `folder` (default: the
    source file's folder)."""
    folder = folder or Path(source).parent
    kind_name = raw.get("kind")
    if kind_name not in SUITE_KINDS:
        raise InputError(
            f"{source}: kind: {kind_name!r} is not a suite kind; known: {', '.join(sorted(SUITE_KINDS))}"
        )
    kind = suite_kind(kind_name)
    try:
        config = kind.config_class.model_validate(raw)
    except ValidationError as error:
        message = describe(error, config_class=kind.config_class, prefix=(str(raw["name"]),))
        raise InputError(f"{source}: {message}") from None
    config = config.model_copy(update=_resolved_paths(config, source, folder))
    if kind.inputs is not None:  # every other file it reads is there, and runs no code it was not allowed to
        try:
            kind.inputs(config)
        except InputError as error:
            raise InputError(f"{source}: {config.name}.{error}") from None
    if kind.validate is not None:  # its data, line by line (errors name the data file and line)
        kind.validate(config)
    return config


def _is_path_field(annotation: object) -> bool:
    return annotation is Path or Path in get_args(annotation)


def _resolved_paths(config: SuiteConfig, suite_file: Path | str, folder: Path) -> dict[str, Path]:
    """Every Path field made absolute; a file that exists nowhere is an InputError naming the key."""
    resolved = {}
    for field, info in type(config).model_fields.items():
        value = getattr(config, field)
        if value is None or not _is_path_field(info.annotation):
            continue
        candidates = resolve_data_path(value, folder.resolve())
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            tried = " or ".join(str(c) for c in candidates)
            raise InputError(f"{suite_file}: {config.name}.{field}: data file not found ({tried})")
        if not found.read_bytes().strip():
            raise InputError(f"{suite_file}: {config.name}.{field}: data file {found} is empty")
        resolved[field] = found
    return resolved
