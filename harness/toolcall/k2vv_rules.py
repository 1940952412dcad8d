"""K2-Vendor-Verifier's rules, as its own code applies them (MoonshotAI/K2-Vendor-Verifier).

Read from `tool_calls_eval.py` at main 0bc5061 and `f1_score.py` of its PR #28 (6c18e73, the F1 the
README defines). Names are K2VV's; quantgate reports them with a `k2vv_` prefix beside its own per-call
metrics (docs/toolcall.md says how the two differ).

Per response (one request, first assistant turn):
  finish_reason       chat mode: the server's. Raw mode (streamed): "tool_calls" when `extract_tool_calls`
                      finds a call, else the engine's (quantgate's local generation: "stop"). K2VV extracts
                      only from streamed raw responses; a request without `stream: true` keeps the engine's.
  extract_tool_calls  only the FIRST closed section (`<|tool_calls_section_begin|>...<|tool_calls_section_end|>`)
                      is read; a call there needs an id `[\\w.]+:\\d+` and `<|tool_call_end|>`; its name is the
                      id's second dotted part (`functions.ns.get_weather:0` -> `ns`; no dot -> call skipped).
  tool_calls_valid    None unless finish_reason == "tool_calls" and the call list is non-empty; then every
                      call must name a tool whose `parameters` exist and are non-empty, with arguments
                      (JSON text is decoded with Python's json) valid under `jsonschema.validate`, which
                      honours the schema's `$schema`. Any error counts as invalid.
Over responses:
  count_finish_reason_tool_calls, count_successful_tool_call (tool_calls_valid true),
  schema_accuracy = count_successful_tool_call / count_finish_reason_tool_calls (0 when nothing triggered).
Against a reference (matched by data_index, common indices only), trigger = finish_reason == "tool_calls":
  tool_call_precision = TP / (TP + FP), tool_call_recall = TP / (TP + FN), tool_call_f1: each 0 when its
  denominator is 0 (so nothing triggered on either side gives 0, not 1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from harness.toolcall.arguments import json_safe, replace_surrogates
from harness.toolcall.parsers import (
    K2_ARGUMENT_BEGIN,
    K2_CALL_BEGIN,
    K2_CALL_END,
    K2_SECTION_BEGIN,
    K2_SECTION_END,
    EndpointText,
)

TOOL_CALLS = "tool_calls"


def _k2vv_id(text: str, start: int) -> tuple[str, int] | None:
    """`\\s*([\\w.]+:\\d+)\\s*` at `start`: (id, end) or None."""
    i, n = start, len(text)
    while i < n and text[i].isspace():
        i += 1
    name_start = i
    while i < n and (text[i].isalnum() or text[i] in "_."):
        i += 1
    if i == name_start or i >= n or text[i] != ":":
        return None
    digits = i + 1
    i = digits
    while i < n and text[i].isdecimal():
        i += 1
    if i == digits:
        return None
    ident = text[name_start:i]
    while i < n and text[i].isspace():
        i += 1
    return ident, i


def extract_tool_calls(text: str) -> list[dict[str, Any]]:
    """K2VV's raw-mode extraction (`extract_tool_call_info`), in one linear pass."""
    begin = text.find(K2_SECTION_BEGIN)
    if begin < 0:
        return []
    end = text.find(K2_SECTION_END, begin + len(K2_SECTION_BEGIN))
    if end < 0:
        return []
    section = text[begin + len(K2_SECTION_BEGIN) : end]
    calls: list[dict[str, Any]] = []
    call_end = -2  # cached position of the next <|tool_call_end|>
    start = section.find(K2_CALL_BEGIN)
    while start >= 0:
        found = _k2vv_id(section, start + len(K2_CALL_BEGIN))
        if found is None or not section.startswith(K2_ARGUMENT_BEGIN, found[1]):
            start = section.find(K2_CALL_BEGIN, start + 1)
            continue
        arguments = found[1] + len(K2_ARGUMENT_BEGIN)
        if call_end != -1 and call_end < arguments:
            call_end = section.find(K2_CALL_END, arguments)
        if call_end < 0:
            break  # no later call can close either
        ident = found[0]
        parts = ident.split(".")
        if len(parts) > 1:  # K2VV: function_id.split(".")[1], an IndexError skips the call
            calls.append(
                {
                    "id": ident,
                    "type": "function",
                    "function": {"name": parts[1].split(":")[0], "arguments": section[arguments:call_end].strip()},
                }
            )
        start = section.find(K2_CALL_BEGIN, call_end + len(K2_CALL_END))
    return calls


def validate_tool_call(tool_call: Mapping[str, Any], tools: Sequence[Mapping[str, Any]]) -> bool:
    """K2VV's `validate_tool_call`: True only when the call passes its tool's declared schema."""
    try:
        name = tool_call["function"]["name"]
        schema = next((t["function"]["parameters"] for t in tools if t["function"]["name"] == name), None)
        if not schema:
            return False
        arguments = tool_call["function"]["arguments"]
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        jsonschema.validate(instance=arguments, schema=schema)
        return True
    except Exception:  # noqa: BLE001 - K2VV counts every failure (missing key, bad JSON, bad schema) as invalid
        return False


def k2vv_response(text: str, tools: Sequence[Mapping[str, Any]], *, stream: bool = True) -> dict[str, Any]:
    """The first turn as K2VV records it: finish_reason, tool_calls_valid and the response message (validated as
    received, recorded as strict JSON)."""
    if isinstance(text, EndpointText):
        message = {
            "role": "assistant",
            "content": text.message.get("content"),
            "tool_calls": text.message.get("tool_calls") or None,
        }
        finish_reason = text.finish_reason
    else:
        calls = extract_tool_calls(text) if stream else []
        message = {"role": "assistant", "content": replace_surrogates(str(text)), "tool_calls": calls or None}
        finish_reason = TOOL_CALLS if calls else "stop"
    valid = None
    if finish_reason == TOOL_CALLS and message["tool_calls"]:
        valid = all(validate_tool_call(call, tools) for call in message["tool_calls"])
    return {"finish_reason": finish_reason, "tool_calls_valid": valid, "message": json_safe(message)}


def schema_counts(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """count_finish_reason_tool_calls, count_successful_tool_call and schema_accuracy over K2VV records."""
    triggered = [r for r in records if r["finish_reason"] == TOOL_CALLS]
    successful = sum(bool(r["tool_calls_valid"]) for r in triggered)
    return {
        "count_finish_reason_tool_calls": len(triggered),
        "count_successful_tool_call": successful,
        "schema_accuracy": successful / len(triggered) if triggered else 0.0,
    }


def trigger_f1(reference: Mapping[int, str | None], test: Mapping[int, str | None]) -> dict[str, Any]:
    """K2VV's tool_call precision/recall/F1 of `test` finish reasons against `reference`, by data_index."""
    common = sorted(set(reference) & set(test))
    tp = fp = fn = tn = 0
    for index in common:
        expected, made = reference[index] == TOOL_CALLS, test[index] == TOOL_CALLS
        tp += expected and made
        fp += made and not expected
        fn += expected and not made
        tn += not expected and not made
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "matched": len(common),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "tool_call_precision": precision,
        "tool_call_recall": recall,
        "tool_call_f1": f1,
    }
