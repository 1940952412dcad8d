"""Read a tool call's JSON arguments safely: linear time, bounded nesting, finite numbers, valid Unicode.

Python's `json` accepts `NaN`, `Infinity` and `1e999` (as float inf), which are not JSON and make the
samples file unreadable by strict readers; it decodes `"\\ud800"` to a lone surrogate, which cannot be
written as UTF-8; and it parses arguments nested hundreds deep that later overflow the chat template's
recursion. Each of these is reported as a reason, so that the call is recorded as malformed, never raised.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_NESTING = 64  # deepest arguments accepted: far beyond any declared tool schema, far below recursion limits


class _NotJson(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"non-finite number {name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotJson(f"number {text[:20]} overflows to infinity")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    """A Python str holding a surrogate code point cannot be encoded as UTF-8 (a pair is one code point)."""
    return _SURROGATE.search(text) is not None


def replace_surrogates(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def nesting_depth(text: str) -> int:
    """Deepest `[`/`{` nesting of JSON text, strings skipped; one linear pass."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def read_json(text: str) -> tuple[Any, str | None]:
    """(value, None), or (None, reason) when `text` is not strict, finite, shallow JSON in valid Unicode."""
    if nesting_depth(text) > MAX_NESTING:
        return None, f"arguments nest deeper than {MAX_NESTING} levels"
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except _NotJson as exc:
        return None, f"arguments are not valid JSON: {exc}"
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, ints past the 4300-digit limit
        return None, f"arguments are not valid JSON: {exc}"
    if has_lone_surrogate(text) or (
        "\\u" in text and has_lone_surrogate(json.dumps(value, ensure_ascii=False))
    ):
        return None, "arguments hold invalid Unicode (a lone surrogate)"
    return value, None


def read_json_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    value, error = read_json(text)
    if error is None and not isinstance(value, dict):
        return None, "arguments are not a JSON object"
    return value, error


def json_safe(value: Any) -> Any:
    """`value` as strict JSON data: NaN and infinities become the strings "NaN", "Infinity", lone surrogates U+FFFD."""
    text = replace_surrogates(json.dumps(value, ensure_ascii=False))
    return json.loads(text, parse_constant=str)
