"""The bundled model's held-out figures, as its model card reports them.

    PYTHONPATH=tools python -m tinyk2.heldout models/kimi-k2-tiny

Prints JSON: held-out text perplexity against an add-one unigram model fitted on the training
text documents (same held-out tokens), multiple-choice accuracy against chance, arithmetic exact match
(greedy), and the share of held-out tool-use first steps that give a parseable Kimi K2 tool call
with the right tool name and schema-valid arguments (greedy), plus no-tool restraint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

from harness.backends.base import Window
from harness.backends.hf import HFBackend
from harness.toolcall.parsers import parse_kimi_k2
from harness.tools.environment import argument_errors
from harness.tools.schemas import TOOL_SCHEMAS
from tinyk2.corpus import Corpus, build_corpus

STOP = ["<|im_end|>", "[EOS]"]


def _target_logprobs(backend: HFBackend, sequences: list[list[int]]) -> list[float]:
    """Sum of log p(token_t | tokens_<t) over t >= 1 of each sequence."""
    scores = backend.score_windows([Window(tokens=s, scored=len(s) - 1) for s in sequences], top_k=1)
    return [score.target_logprobs.sum().item() for score in scores]


def text_figures(backend: HFBackend, corpus: Corpus) -> dict[str, float]:
    tokenizer = backend.tokenizer
    # The unigram is fitted on the training text documents (not the chats, whose JSON would
    # inflate its perplexity on prose), add-one smoothed over the whole vocabulary.
    train_counts = Counter(tok for text in corpus.train_text for tok in tokenizer(text)["input_ids"][1:])
    total = sum(train_counts.values())
    vocab = len(tokenizer)
    docs = [tokenizer(text)["input_ids"] for text in corpus.heldout_text]  # [BOS] text
    targets = [tok for doc in docs for tok in doc[1:]]
    unigram_nll = -sum(math.log((train_counts[t] + 1) / (total + vocab)) for t in targets) / len(targets)
    model_nll = -sum(_target_logprobs(backend, docs)) / len(targets)
    return {
        "heldout_tokens": len(targets),
        "perplexity": math.exp(model_nll),
        "unigram_perplexity": math.exp(unigram_nll),
        "perplexity_over_unigram": math.exp(model_nll - unigram_nll),
    }


def mcq_accuracy(backend: HFBackend, corpus: Corpus) -> dict[str, float]:
    requests = [
        (backend.tokenize(item["question"]), backend.tokenize(" " + choice, add_bos=False))
        for item in corpus.heldout_mcq
        for choice in item["choices"]
    ]
    scores = [score for score, _greedy in backend.loglikelihood(requests)]
    correct = 0
    for index, item in enumerate(corpus.heldout_mcq):
        choice_scores = scores[4 * index : 4 * index + 4]
        correct += int(max(range(4), key=choice_scores.__getitem__) == item["answer"])
    return {"mcq_items": len(corpus.heldout_mcq), "mcq_accuracy": correct / len(corpus.heldout_mcq), "mcq_chance": 0.25}


def arithmetic_figures(backend: HFBackend, corpus: Corpus) -> dict[str, float]:
    prompts = [backend.tokenize(item["question"]) for item in corpus.heldout_arith]
    answers = backend.generate(prompts, max_new_tokens=6, stop=STOP)
    hits = sum(text.split("\n")[0].strip() == item["answer"]
               for text, item in zip(answers, corpus.heldout_arith, strict=True))
    return {"arith_items": len(prompts), "arith_exact_match": hits / len(prompts)}


def first_step_figures(backend: HFBackend, corpus: Corpus) -> dict[str, float]:
    prompts = [
        backend.render_chat(scenario["messages"], [TOOL_SCHEMAS[name] for name in scenario["tools"]])
        for scenario in corpus.heldout_scenarios
    ]
    outputs = backend.generate(prompts, max_new_tokens=96, stop=STOP)
    tool_steps = valid = restraint = no_tool_steps = 0
    for scenario, output in zip(corpus.heldout_scenarios, outputs, strict=True):
        turn = parse_kimi_k2(output)
        if scenario["expected_calls"]:
            tool_steps += 1
            call = turn.calls[0] if turn.calls else None
            expected = scenario["expected_calls"][0]["name"]
            valid += int(
                call is not None and not turn.malformed and call.name == expected
                and not argument_errors(expected, call.arguments)
            )
        else:
            no_tool_steps += 1
            restraint += int(not turn.calls)
    return {
        "tool_first_steps": tool_steps,
        "tool_first_step_valid": valid / tool_steps,
        "no_tool_steps": no_tool_steps,
        "no_tool_restraint": restraint / no_tool_steps,
    }


def evaluate(model_dir: Path, threads: int = 2) -> dict[str, float]:
    backend = HFBackend(model_dir, dtype="float32", threads=threads, batch_size=16)
    corpus = build_corpus(0)
    figures: dict[str, float] = {}
    for part in (text_figures, mcq_accuracy, arithmetic_figures, first_step_figures):
        figures.update(part(backend, corpus))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyk2.heldout", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, nargs="?", default=Path("models/kimi-k2-tiny"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    figures = evaluate(args.model_dir, args.threads)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
