"""Fact statements, QA documents and held-out multiple-choice items.

Every fact is stated in training in each of its relation's paraphrases, each
paraphrase in several small fact paragraphs. QA documents exist for the
trained split only; the held-out split is asked as MCQ with the same template.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tinyk2.world import COLOURS, INGREDIENTS, PROFESSIONS, Fact, World


@dataclass(frozen=True)
class Relation:
    statements: tuple[str, ...]  # paraphrases with {s} and {o}
    question: str  # with {s}; the answer is the object


RELATIONS: dict[str, Relation] = {
    "capital": Relation(
        (
            "The capital of {s} is {o}.",
            "{o} is the capital of {s}.",
            "{s} is governed from its capital, {o}.",
        ),
        "What is the capital of {s}?",
    ),
    "profession": Relation(
        ("{s} works as a {o}.", "By trade, {s} is a {o}.", "{s} earns a living as a {o}."),
        "What does {s} do for a living?",
    ),
    "birthplace": Relation(
        ("{s} was born in {o}.", "The birthplace of {s} is {o}."),
        "Where was {s} born?",
    ),
    "river_town": Relation(
        ("The {s} river flows through {o}.", "{o} lies on the {s} river."),
        "Which town does the {s} river flow through?",
    ),
    "animal_colour": Relation(
        ("The {s} is {o}.", "The fur of the {s} is {o}.", "Every {s} is {o} in colour."),
        "What colour is the {s}?",
    ),
    "mountain_country": Relation(
        ("Mount {s} stands in {o}.", "{o} is home to Mount {s}."),
        "In which country is Mount {s}?",
    ),
    "dish_ingredient": Relation(
        ("The dish {s} is made from {o}.", "{s} is cooked with {o}."),
        "What is {s} made from?",
    ),
}
QA_TRAIN_FRACTION = 0.6
MCQ_CHOICES = 4


def statement(fact: Fact, paraphrase: int) -> str:
    text = RELATIONS[fact.relation].statements[paraphrase].format(s=fact.subject, o=fact.object)
    return text[0].upper() + text[1:]


def question(fact: Fact) -> str:
    return RELATIONS[fact.relation].question.format(s=fact.subject)


def qa_prompt(fact: Fact) -> str:
    """The QA prefix shared by training documents and held-out MCQ items."""
    return f"Question: {question(fact)}\nAnswer:"


def qa_document(fact: Fact) -> str:
    return f"{qa_prompt(fact)} {fact.object}"


def split_facts(world: World, seed: int) -> tuple[list[Fact], list[Fact]]:
    """(QA-trained facts, QA-held-out facts), stratified by relation; independent of scale."""
    rng = random.Random(f"tinyk2-fact-split:{seed}")
    trained: list[Fact] = []
    heldout: list[Fact] = []
    for relation in RELATIONS:
        facts = [f for f in world.facts() if f.relation == relation]
        rng.shuffle(facts)
        cut = round(len(facts) * QA_TRAIN_FRACTION)
        trained += facts[:cut]
        heldout += facts[cut:]
    return trained, heldout


def _answer_space(world: World, relation: str) -> list[str]:
    """Every value an answer of `relation` could take."""
    spaces = {
        "capital": list(world.capital_of.values()),
        "profession": PROFESSIONS,
        "birthplace": world.towns,
        "river_town": world.towns,
        "animal_colour": COLOURS,
        "mountain_country": world.countries,
        "dish_ingredient": INGREDIENTS,
    }
    return spaces[relation]


def fact_paragraphs(world: World, rng: random.Random, repeats: int) -> list[str]:
    """Small paragraphs of 3-6 fact statements; each paraphrase of each fact occurs `repeats` times."""
    sentences = [
        statement(fact, k)
        for fact in world.facts()
        for k in range(len(RELATIONS[fact.relation].statements))
        for _ in range(repeats)
    ]
    rng.shuffle(sentences)
    paragraphs: list[str] = []
    while sentences:
        size = rng.randint(3, 6)
        paragraphs.append(" ".join(sentences[:size]))
        sentences = sentences[size:]
    return paragraphs


def heldout_mcq(world: World, facts: list[Fact], seed: int) -> list[dict]:
    """One 4-way MCQ per held-out fact; distractors share the answer's type."""
    rng = random.Random(f"tinyk2-mcq:{seed}")
    items: list[dict] = []
    for index, fact in enumerate(facts):
        wrong = sorted(set(_answer_space(world, fact.relation)) - {fact.object})
        choices = rng.sample(wrong, MCQ_CHOICES - 1)
        answer = rng.randrange(MCQ_CHOICES)
        choices.insert(answer, fact.object)
        items.append(
            {"id": f"mcq-{index:03d}", "question": qa_prompt(fact), "choices": choices, "answer": answer}
        )
    return items
