"""Read a YAML file into a typed (pydantic, extra="forbid") config, with one-line errors naming file and key."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TypeVar

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


def describe(error: ValidationError, hidden_loc: Collection[str] = ()) -> str:
    """One line naming the key: unknown keys first, since they are the commonest mistake.

    `hidden_loc` drops location parts that are not keys (e.g. pydantic's union tags).
    """
    problems = error.errors()
    unknown = [p for p in problems if p["type"] == "extra_forbidden"]
    first = (unknown or problems)[0]
    location = ".".join(str(part) for part in first["loc"] if part not in hidden_loc)
    if first["type"] == "extra_forbidden":
        return f"unknown key {location!r}"
    message = first["msg"].removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def load_typed_yaml(path: Path, config_class: type[Config], hidden_loc: Collection[str] = ()) -> Config:
    data = read_yaml_mapping(path)
    try:
        return config_class.model_validate(data)
    except ValidationError as error:
        raise InputError(f"{path}: {describe(error, hidden_loc)}") from None
