"""The deterministic synthetic corpus tinyk2 is trained and evaluated on.

Every part draws from its own `random.Random` stream named after the seed, so
the same seed gives the same corpus, and held-out sets (built first, from their
own streams) do not depend on `scale`. Training generators exclude what is
held out: prose paragraphs, QA-held-out facts, held-out arithmetic triples and
chats containing a held-out scenario's opening message.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from harness.tools.environment import ToolEnvironment
from harness.tools.schemas import TOOL_SCHEMAS
from tinyk2.corpus_arith import arith_document, heldout_arith, heldout_triples, training_triples
from tinyk2.corpus_facts import fact_paragraphs, heldout_mcq, qa_document, split_facts
from tinyk2.corpus_intents import TOOL_INTENTS, Context, Intent
from tinyk2.corpus_prose import prose_paragraphs
from tinyk2.corpus_shop import Dialogue, declared_tools, random_shop_state
from tinyk2.corpus_smalltalk import NO_TOOL_INTENTS, NO_TOOL_SHARE
from tinyk2.world import Fact, Person, World, build_world

TRAIN_PROSE = 6000
HELDOUT_PROSE = 200
FACT_PARAPHRASE_REPEATS = 5  # documents stating each paraphrase of each fact
QA_REPEATS = 4  # copies of each trained fact's QA document
ANNEAL_FACT_REPEATS = 6  # fact paragraphs (fresh draws) per paraphrase in the annealing set
ANNEAL_QA_REPEATS = 3
TRAIN_ARITH = 4000
TRAIN_CHATS = 3000
HELDOUT_SCENARIOS = 60
SCENARIO_EXTRA_STEPS = 2  # max_steps = reference assistant turns + this


@dataclass(frozen=True)
class Corpus:
    train_text: list[str]  # prose, fact paragraphs, fact QA and arithmetic QA documents
    train_chats: list[dict]  # {"tools": [OpenAI tool schema], "messages": [OpenAI chat message]}
    anneal_text: list[str]  # fresh fact paragraphs and trained-fact QA for the final annealing phase
    heldout_text: list[str]  # prose paragraphs for perplexity
    heldout_mcq: list[dict]  # {"id", "question", "choices": [4 str], "answer": int}
    heldout_arith: list[dict]  # {"id", "question", "answer": str}
    heldout_scenarios: list[dict]  # {"id", "tools", "initial_state", "messages", "expected_calls", ...}


def _stream(seed: int, name: str) -> random.Random:
    return random.Random(f"tinyk2-{name}:{seed}")


def _scaled(count: int, scale: float) -> int:
    return max(1, round(count * scale))


@dataclass(frozen=True)
class _Episode:
    intent: str
    tools: list[str]
    initial_state: dict[str, Any]
    dialogue: Dialogue
    user_text: str
    answer: str
    expected_answer: str | None


def _episode(
    rng: random.Random,
    world: World,
    people: list[Person],
    facts: list[Fact],
    excluded: frozenset,
    intent_name: str,
) -> _Episode:
    intent: Intent = TOOL_INTENTS.get(intent_name) or NO_TOOL_INTENTS[intent_name]
    state = random_shop_state(rng, world, people)
    dialogue = Dialogue(ToolEnvironment(state))
    outcome = intent(Context(rng, world, state, people, facts, excluded), dialogue)
    tools = declared_tools(rng, dialogue.tool_names(), allow_empty=True)
    return _Episode(
        intent_name, tools, state, dialogue, outcome.user_text, outcome.answer, outcome.expected_answer
    )


def _random_intent(rng: random.Random) -> str:
    pool = NO_TOOL_INTENTS if rng.random() < NO_TOOL_SHARE else TOOL_INTENTS
    return rng.choice(sorted(pool))


def _heldout_scenarios(world: World, facts: list[Fact], excluded: frozenset, seed: int) -> list[dict]:
    rng = _stream(seed, "scenarios-heldout")
    names = sorted(TOOL_INTENTS) + sorted(NO_TOOL_INTENTS)
    scenarios = []
    for index in range(HELDOUT_SCENARIOS):
        episode = _episode(rng, world, world.heldout_customers, facts, excluded, names[index % len(names)])
        scenarios.append(
            {
                "id": f"scenario-{index:03d}-{episode.intent}",
                "tools": episode.tools,
                "initial_state": episode.initial_state,
                "messages": [{"role": "user", "content": episode.user_text}],
                "expected_calls": episode.dialogue.expected_calls(),
                "expected_state": episode.dialogue.env.state(),
                "expected_answer": episode.expected_answer,
                "max_steps": len(episode.dialogue.turns) + SCENARIO_EXTRA_STEPS,
            }
        )
    return scenarios


def _train_chats(
    world: World, facts: list[Fact], excluded: frozenset, heldout_openings: list[str], n: int, seed: int
) -> list[dict]:
    rng = _stream(seed, "chats-train")
    escaped = [json.dumps(text)[1:-1] for text in heldout_openings]  # as they appear inside JSON
    chats: list[dict] = []
    while len(chats) < n:
        episode = _episode(rng, world, world.train_customers, facts, excluded, _random_intent(rng))
        chat = {
            "tools": [TOOL_SCHEMAS[name] for name in episode.tools],
            "messages": episode.dialogue.messages(episode.user_text, episode.answer),
        }
        text = json.dumps(chat, sort_keys=True)
        if not any(opening in text for opening in escaped):
            chats.append(chat)
    return chats


def build_corpus(seed: int = 0, scale: float = 1.0) -> Corpus:
    """The corpus for `seed`; `scale` multiplies the training items only."""
    world = build_world(seed)
    qa_facts, mcq_facts = split_facts(world, seed)
    # held out first: none of it depends on scale
    heldout_text = prose_paragraphs(world, _stream(seed, "prose-heldout"), HELDOUT_PROSE)
    held_triples = heldout_triples(seed)
    excluded = frozenset(held_triples)
    scenarios = _heldout_scenarios(world, qa_facts, excluded, seed)
    # training
    prose = prose_paragraphs(
        world, _stream(seed, "prose-train"), _scaled(TRAIN_PROSE, scale), tuple(heldout_text)
    )
    facts_rng = _stream(seed, "facts-train")
    fact_docs = fact_paragraphs(world, facts_rng, _scaled(FACT_PARAPHRASE_REPEATS, scale))
    qa_docs = [qa_document(fact) for fact in qa_facts for _ in range(_scaled(QA_REPEATS, scale))]
    arith_docs = [
        arith_document(t)
        for t in training_triples(_stream(seed, "arith-train"), _scaled(TRAIN_ARITH, scale), set(excluded))
    ]
    train_text = prose + fact_docs + qa_docs + arith_docs
    _stream(seed, "mix-train").shuffle(train_text)
    anneal_text = fact_paragraphs(world, _stream(seed, "facts-anneal"), _scaled(ANNEAL_FACT_REPEATS, scale))
    anneal_text += [qa_document(fact) for fact in qa_facts for _ in range(_scaled(ANNEAL_QA_REPEATS, scale))]
    openings = [s["messages"][0]["content"] for s in scenarios]
    return Corpus(
        train_text=train_text,
        train_chats=_train_chats(world, qa_facts, excluded, openings, _scaled(TRAIN_CHATS, scale), seed),
        anneal_text=anneal_text,
        heldout_text=heldout_text,
        heldout_mcq=heldout_mcq(world, mcq_facts, seed),
        heldout_arith=heldout_arith(held_triples),
        heldout_scenarios=scenarios,
    )


def training_documents(corpus: Corpus) -> list[str]:
    """Every training document as plain text; chats as `json.dumps(chat, sort_keys=True)`."""
    chats = [json.dumps(chat, sort_keys=True) for chat in corpus.train_chats]
    return corpus.train_text + corpus.anneal_text + chats
