"""Read a YAML file into a typed (pydantic, extra="forbid") config, with one-line errors naming file and key."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from pathlib import Path
from typing import TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from quantgate.core.errors import InputError

Config = TypeVar("Config", bound=BaseModel)


def read_yaml_mapping(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except IsADirectoryError:
        raise InputError(f"{path}: a directory, not a YAML file") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    return data


def describe(
    error: ValidationError,
    hidden_loc: Collection[str] = (),
    config_class: type[BaseModel] | None = None,
    prefix: tuple[str, ...] = (),
) -> str:
    """One line naming the key: unknown keys first, since they are the commonest mistake (a typo such
    as `context_lenght` is reported as unknown, with the close match, not as `context_length` missing).

    `hidden_loc` drops location parts that are not keys (e.g. pydantic's union tags); `config_class`
    lets an unknown key be matched against the keys allowed where it stands; `prefix` is put before
    the location (e.g. a suite's name).
    """
    problems = error.errors()
    unknown = [p for p in problems if p["type"] == "extra_forbidden"]
    first = (unknown or problems)[0]
    loc = [part for part in first["loc"] if part not in hidden_loc]
    location = ".".join(str(part) for part in (*prefix, *loc))
    if first["type"] == "extra_forbidden":
        known = _known_keys(config_class, loc[:-1]) if config_class is not None and loc else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1) if known else []
        return f"unknown key {location!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    message = first["msg"].removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (Model, list[Model], Model | None, ...), if exactly one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = {m for m in (_model_in(arg) for arg in get_args(annotation)) if m is not None}
    return found.pop() if len(found) == 1 else None


def _known_keys(config_class: type[BaseModel], path: list[str | int]) -> list[str]:
    """The keys a config allows at `path` (keys and list indices), or [] where it cannot be followed."""
    model: type[BaseModel] | None = config_class
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part)) if model is not None else None
        model = _model_in(field.annotation) if field is not None else None
        if model is None:
            return []
    return [info.alias or name for name, info in model.model_fields.items()]


def load_typed_yaml(path: Path, config_class: type[Config], hidden_loc: Collection[str] = ()) -> Config:
    data = read_yaml_mapping(path)
    try:
        return config_class.model_validate(data)
    except ValidationError as error:
        raise InputError(f"{path}: {describe(error, hidden_loc, config_class)}") from None
