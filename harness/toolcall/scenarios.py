"""The multi-step scenarios file (JSONL), read and checked line by line before any model is loaded.

Each line: `id` (unique, non-empty), `tools` (names of harness/tools/schemas.py), `messages`,
`max_steps` (at least 1), `initial_state`, `expected_calls` (each with a tool `name`),
`expected_state`, `expected_answer`. A problem is an InputError naming the file, the line and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.tools.schemas import TOOL_SCHEMAS
from quantgate.core.errors import InputError
from quantgate.core.typed_yaml import describe


class ExpectedCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    tools: list[str]
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_steps: int = Field(ge=1)
    initial_state: dict[str, Any]
    expected_calls: list[ExpectedCall]
    expected_state: dict[str, Any]
    expected_answer: str | None = None


def read_scenarios(path: Path) -> list[dict[str, Any]]:
    """The scenarios as dicts (the loop's input), every line checked; an empty file is an error."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start})") from None
    scenarios: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            scenario = Scenario.model_validate(raw)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{number}: not a JSON line ({error.msg})") from None
        except ValidationError as error:
            raise InputError(f"{path}:{number}: {describe(error)}") from None
        unknown = [t for t in (*scenario.tools, *(c.name for c in scenario.expected_calls)) if t not in TOOL_SCHEMAS]
        if unknown:
            raise InputError(f"{path}:{number}: unknown tool {unknown[0]!r}; tools: {', '.join(sorted(TOOL_SCHEMAS))}")
        if scenario.id in seen:
            raise InputError(f"{path}:{number}: id {scenario.id!r} repeats line {seen[scenario.id]}")
        seen[scenario.id] = number
        scenarios.append(raw)
    if not scenarios:
        raise InputError(f"{path}: no scenarios")
    return scenarios
