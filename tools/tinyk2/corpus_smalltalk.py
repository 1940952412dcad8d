"""Scenario intents whose right move is to answer without any tool.

Greetings, questions the facts or arithmetic answer, and requests no tool
covers: the reference trajectory makes no call and the assistant replies in text.
"""

from __future__ import annotations

from tinyk2.corpus_arith import random_triple, solve
from tinyk2.corpus_facts import question, statement
from tinyk2.corpus_intents import Context, Intent, Outcome, pick
from tinyk2.corpus_shop import Dialogue

OUT_OF_SCOPE = [
    "book a train ticket to {town}",
    "order a taxi to {town} for tonight",
    "send flowers to my aunt in {town}",
    "reset the password of my email account",
    "play some music",
    "write a poem about the {river} river",
]


def greeting(ctx: Context, d: Dialogue) -> Outcome:
    first = ctx.rng.choice(ctx.people).first
    text = pick(
        ctx, ["Hi, I'm {f}. How are you?", "Hello there, this is {f}!", "Good morning! {f} here."], f=first
    )
    return Outcome(text, f"Hello {first}! How can I help you today?", None)


def fact_question(ctx: Context, d: Dialogue) -> Outcome:
    fact = ctx.rng.choice(ctx.facts)
    asked = question(fact)
    text = pick(
        ctx,
        ["Quick question: {q}", "Can you tell me this: {q}", "I was wondering, {q}"],
        q=asked[0].lower() + asked[1:],
    )
    return Outcome(text, statement(fact, 0), fact.object)


def arithmetic(ctx: Context, d: Dialogue) -> Outcome:
    triple = random_triple(ctx.rng, ctx.rng.choice(["plus", "minus", "times"]))
    while triple in ctx.excluded_triples:
        triple = random_triple(ctx.rng, triple[1])
    a, op, b = triple
    text = pick(
        ctx, ["Can you work out {a} {o} {b} for me?", "Quick maths: what is {a} {o} {b}?"], a=a, o=op, b=b
    )
    return Outcome(text, f"{a} {op} {b} is {solve(triple)}.", str(solve(triple)))


def out_of_scope(ctx: Context, d: Dialogue) -> Outcome:
    request = ctx.rng.choice(OUT_OF_SCOPE).format(
        town=ctx.rng.choice(ctx.world.towns), river=ctx.rng.choice(sorted(ctx.world.river_town))
    )
    first = ctx.rng.choice(ctx.people).first
    text = pick(
        ctx,
        ["Hi, {f} here. Can you {r}?", "I'm {f}. Please {r}.", "{f} speaking: could you {r}?"],
        f=first,
        r=request,
    )
    return Outcome(text, f"Sorry, I can't {request}. I can help with the tools I have, though.", None)


NO_TOOL_INTENTS: dict[str, Intent] = {
    "greeting": greeting,
    "fact_question": fact_question,
    "arithmetic": arithmetic,
    "out_of_scope": out_of_scope,
}
NO_TOOL_SHARE = 0.2
