"""Calibration samples for GPTQ: held-out text and tool-use dialogues rendered with the chat template.

A source is `KIND:PATH[START:STOP]` (rows START..STOP-1 of a JSONL file; default: all rows; a
relative PATH is looked up in the working directory, then in the repository):
`text` reads each row's `text`;
`chat` renders each row's `messages` + `tools` (a tool-use scenario; tools by name resolve
through `harness.tools.schemas`)
with the model's own chat template, followed by the reference assistant turn (`expected_calls` as
Kimi K2 tool calls, `functions.NAME:IDX` ids) and the expected answer when the row has them.

Sampling is deterministic: every rendered document is tokenized (BOS included, as the tokenizer
does), the documents are shuffled with `random.Random(seed)`, concatenated and cut into `samples`
rows of `sample_length` tokens (documents repeat from the start when the stream runs short). The
set's identity is the sha256 of the token ids, which the manifest records.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from pathlib import Path

import torch
from transformers import AutoTokenizer

from quantgate.core.errors import InputError
from quantgate.core.gptq import CalibrationSet, CalibrationSpec
from quantgate.core.shipped import resolve_data_path

TOOLS_FILE = "tools.json"  # beside a chat source: the schemas of the tools its rows name
SOURCE_RE = re.compile(r"^(text|chat):(.+?)(?:\[(\d*):(\d*)\])?$")

def _rows(path: Path, start: int | None, stop: int | None, source: str) -> list[dict]:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise InputError(f"calibration source {source!r}: {path} is missing") from None
    rows = []
    for number, line in enumerate(lines[start:stop], start=(start or 0) + 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise InputError(f"{path}: line {number} is not JSON ({error.msg})") from None
    return rows


def _reference_turn(row: dict) -> list[dict]:
    """The scenario's reference assistant turn(s): its tool calls, then its expected answer."""
    turns = []
    calls = row.get("expected_calls") or []
    if calls:
        tool_calls = [
            {"id": f"functions.{c['name']}:{i}", "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"]}}
            for i, c in enumerate(calls)
        ]  # fmt: skip
        turns.append({"role": "assistant", "content": "", "tool_calls": tool_calls})
    if row.get("expected_answer"):
        turns.append({"role": "assistant", "content": str(row["expected_answer"])})
    return turns


@functools.cache
def _tool_schemas(schemas_file: Path) -> dict:
    try:
        return json.loads(schemas_file.read_text())
    except FileNotFoundError:
        raise InputError(f"{schemas_file}: missing (chat calibration rows name tools)") from None


def _tool_schema(source: Path, name: str) -> dict:
    """A tool named in a chat row: its schema from TOOLS_FILE beside the source."""
    schemas_file = source.parent / TOOLS_FILE
    schemas = _tool_schemas(schemas_file)
    if name not in schemas:
        raise InputError(f"{schemas_file}: no tool {name!r}; known: {', '.join(sorted(schemas))}")
    return schemas[name]


def _documents(source: str, tokenizer, root: Path) -> list[list[int]]:
    match = SOURCE_RE.match(source)
    if match is None:
        raise InputError(f"calibration source {source!r}: expected KIND:PATH[START:STOP], KIND text or chat")
    kind, path_text, start, stop = match.groups()
    candidates = resolve_data_path(path_text, root)  # then `suites/...`: the shipped suites' data
    path = next((c for c in candidates if c.exists()), candidates[0])
    rows = _rows(path, int(start) if start else None, int(stop) if stop else None, source)
    docs = []
    for number, row in enumerate(rows):
        field = "text" if kind == "text" else "messages"
        if field not in row:
            raise InputError(f"{path}: row {number} of {source!r} has no field {field!r}")
        if kind == "text":
            docs.append(tokenizer(row["text"])["input_ids"])
        else:
            messages = list(row["messages"]) + _reference_turn(row)
            tools = [_tool_schema(path, t) if isinstance(t, str) else t for t in row.get("tools") or []]
            ids = tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=True, return_dict=False)
            docs.append(list(ids))
    if not docs:
        raise InputError(f"calibration source {source!r}: no rows")
    return docs


def build_calibration(spec: CalibrationSpec, model: Path, root: Path) -> tuple[torch.Tensor, CalibrationSet]:
    """Token ids [samples, sample_length] and the set's description. Relative paths resolve against root."""
    if spec.samples < 1 or spec.sample_length < 2:
        raise InputError(f"calibration: samples ({spec.samples}) >= 1 and sample length ({spec.sample_length}) >= 2")
    tokenizer = AutoTokenizer.from_pretrained(model)
    docs = [doc for source in spec.sources for doc in _documents(source, tokenizer, root)]
    random.Random(spec.seed).shuffle(docs)
    need = spec.samples * spec.sample_length
    stream: list[int] = []
    while len(stream) < need:
        for doc in docs:
            stream.extend(doc)
            if len(stream) >= need:
                break
    ids = torch.tensor(stream[:need], dtype=torch.int64).view(spec.samples, spec.sample_length)  # [S, L]
    digest = hashlib.sha256(ids.numpy().astype("<i8").tobytes()).hexdigest()
    info = CalibrationSet(
        sources=spec.sources, samples=spec.samples, sample_length=spec.sample_length, seed=spec.seed,
        documents=len(docs), sha256=digest,
    )  # fmt: skip
    return ids, info
