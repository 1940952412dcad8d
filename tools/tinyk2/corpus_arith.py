"""Arithmetic QA: `Question: What is 23 plus 45?\nAnswer: 68`.

Plus and minus use operands 0..99 (minus never goes negative), times uses
0..12. Held-out triples are drawn first from their own stream and never
appear in training.
"""

from __future__ import annotations

import random

Triple = tuple[int, str, int]  # (a, op, b)

OPERATIONS: dict[str, int] = {"plus": 99, "minus": 99, "times": 12}  # op -> largest operand
HELDOUT_PER_OPERATION: dict[str, int] = {"plus": 40, "minus": 40, "times": 20}


def solve(triple: Triple) -> int:
    a, op, b = triple
    return {"plus": a + b, "minus": a - b, "times": a * b}[op]


def random_triple(rng: random.Random, op: str) -> Triple:
    a, b = rng.randint(0, OPERATIONS[op]), rng.randint(0, OPERATIONS[op])
    if op == "minus" and a < b:
        a, b = b, a
    return (a, op, b)


def arith_prompt(triple: Triple) -> str:
    a, op, b = triple
    return f"Question: What is {a} {op} {b}?\nAnswer:"


def arith_document(triple: Triple) -> str:
    return f"{arith_prompt(triple)} {solve(triple)}"


def heldout_triples(seed: int) -> list[Triple]:
    rng = random.Random(f"tinyk2-arith-heldout:{seed}")
    triples: list[Triple] = []
    for op, count in HELDOUT_PER_OPERATION.items():
        while sum(t[1] == op for t in triples) < count:
            triple = random_triple(rng, op)
            if triple not in triples:
                triples.append(triple)
    return triples


def training_triples(rng: random.Random, n: int, exclude: set[Triple]) -> list[Triple]:
    """`n` triples (repeats allowed), 45 % plus, 45 % minus, 10 % times, none in `exclude`."""
    triples: list[Triple] = []
    while len(triples) < n:
        triple = random_triple(rng, rng.choices(list(OPERATIONS), weights=[45, 45, 10])[0])
        if triple not in exclude:
            triples.append(triple)
    return triples


def heldout_arith(triples: list[Triple]) -> list[dict]:
    return [
        {"id": f"arith-{i:03d}", "question": arith_prompt(t), "answer": str(solve(t))}
        for i, t in enumerate(triples)
    ]
