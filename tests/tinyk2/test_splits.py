"""The committed held-out splits are what the generator makes, and none of it was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tinyk2.corpus import build_corpus, training_documents
from tinyk2.splits import split_lines

SPLITS = Path(__file__).resolve().parents[2] / "suites" / "data" / "tinyk2"


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(0)


def test_committed_splits_equal_a_fresh_build(corpus):
    for name, text in split_lines(corpus).items():
        assert (SPLITS / name).read_text() == text, f"{name} differs from `python -m tinyk2.splits`"


def test_no_heldout_item_appears_in_training(corpus):
    training = "\n\x00".join(training_documents(corpus))
    rows = {name: [json.loads(line) for line in text.splitlines()] for name, text in split_lines(corpus).items()}
    probes = [row["text"] for row in rows["heldout_text.jsonl"]]
    probes += [row["question"] for row in rows["mcq.jsonl"]]
    probes += [row["question"] for row in rows["arithmetic.jsonl"]]
    probes += [json.dumps(m["content"])[1:-1] for row in rows["toolcall_scenarios.jsonl"] for m in row["messages"]
               if m["role"] == "user"]
    leaked = [probe for probe in probes if probe in training]
    assert not leaked, f"{len(leaked)} held-out items found in training, e.g. {leaked[0]!r}"
    assert len(probes) >= 400
