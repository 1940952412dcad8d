"""The synthetic corpus: determinism, scale-independent held-out sets, no leaks, replayable scenarios."""

from __future__ import annotations

import json
import re

import pytest
from jsonschema import Draft202012Validator
from tinyk2.corpus import Corpus, build_corpus, training_documents

from harness.tools.environment import ToolEnvironment
from harness.tools.schemas import TOOL_SCHEMAS

SMALL = 0.1
ARITH_DOC = re.compile(r"^Question: What is (\d+) (plus|minus|times) (\d+)\?\nAnswer: (\d+)$")


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return build_corpus(seed=0, scale=SMALL)


@pytest.fixture(scope="module")
def training_blob(corpus: Corpus) -> str:
    return "\x00".join(training_documents(corpus))


def _heldout(c: Corpus) -> tuple:
    return c.heldout_text, c.heldout_mcq, c.heldout_arith, c.heldout_scenarios


def test_same_seed_same_corpus(corpus: Corpus) -> None:
    assert build_corpus(seed=0, scale=SMALL) == corpus
    assert build_corpus(seed=1, scale=SMALL).heldout_mcq != corpus.heldout_mcq


def test_heldout_sets_do_not_depend_on_scale(corpus: Corpus) -> None:
    larger = build_corpus(seed=0, scale=0.2)
    assert len(larger.train_text) > len(corpus.train_text)
    assert _heldout(larger) == _heldout(corpus)


def test_sizes_and_shapes(corpus: Corpus) -> None:
    assert len(corpus.heldout_text) == 200 and len(set(corpus.heldout_text)) == 200
    assert len(corpus.heldout_mcq) >= 100 and len(corpus.heldout_arith) == 100
    assert len(corpus.heldout_scenarios) == 60
    for item in corpus.heldout_mcq:
        assert item["question"].startswith("Question: ") and item["question"].endswith("\nAnswer:")
        assert len(item["choices"]) == len(set(item["choices"])) == 4 and 0 <= item["answer"] < 4
    for paragraph in corpus.heldout_text:
        assert 3 <= paragraph.count(". ") + 1 <= 8


def test_heldout_text_and_questions_never_appear_in_training(corpus: Corpus, training_blob: str) -> None:
    for paragraph in corpus.heldout_text:
        assert paragraph not in training_blob
    for item in corpus.heldout_mcq + corpus.heldout_arith:
        assert item["question"] not in training_blob
    for scenario in corpus.heldout_scenarios:
        opening = scenario["messages"][-1]["content"]
        assert opening not in training_blob and json.dumps(opening)[1:-1] not in training_blob


def test_trained_facts_have_qa_documents(corpus: Corpus) -> None:
    qa = [d for d in corpus.train_text if d.startswith("Question: ") and not ARITH_DOC.match(d)]
    trained, heldout = len(set(qa)), len(corpus.heldout_mcq)
    assert 0.55 <= trained / (trained + heldout) <= 0.65


def test_heldout_arithmetic_triples_are_not_trained(corpus: Corpus) -> None:
    trained = set()
    for document in corpus.train_text:
        match = ARITH_DOC.match(document)
        if match:
            a, op, b, result = match.groups()
            assert (
                int(result)
                == {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}[op]
            )
            trained.add((a, op, b))
    heldout = {ARITH_DOC.match(f"{i['question']} {i['answer']}").groups()[:3] for i in corpus.heldout_arith}
    assert trained and not trained & heldout


def test_heldout_scenarios_replay_to_their_expected_state(corpus: Corpus) -> None:
    no_tool = 0
    for scenario in corpus.heldout_scenarios:
        env = ToolEnvironment(scenario["initial_state"])
        for call in scenario["expected_calls"]:
            assert call["name"] in scenario["tools"]
            env.call(call["name"], call["arguments"])
        assert env.state() == scenario["expected_state"]
        assert scenario["max_steps"] >= 2
        no_tool += not scenario["expected_calls"]
    assert 0.1 <= no_tool / len(corpus.heldout_scenarios) <= 0.35


def test_training_chats_are_well_formed(corpus: Corpus) -> None:
    for chat in corpus.train_chats:
        json.dumps(chat)
        declared = {tool["function"]["name"]: tool for tool in chat["tools"]}
        assert all(TOOL_SCHEMAS[name] == tool for name, tool in declared.items())
        messages = chat["messages"]
        assert messages[0]["role"] == "user" and messages[-1]["role"] == "assistant"
        assert "tool_calls" not in messages[-1]
        index = 0
        for message in messages:
            for call in message.get("tool_calls", []):
                name, arguments = call["function"]["name"], call["function"]["arguments"]
                assert call["id"] == f"functions.{name}:{index}"
                index += 1
                assert name in declared
                assert arguments == json.dumps(json.loads(arguments), separators=(",", ":"), ensure_ascii=False)
                Draft202012Validator(declared[name]["function"]["parameters"]).validate(json.loads(arguments))
            if message["role"] == "tool":  # headed by the function's name, as Kimi K2 renders results
                assert message["name"] == message["tool_call_id"].split(".", 1)[1].rsplit(":", 1)[0]
