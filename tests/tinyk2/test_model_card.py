"""The model card's held-out figures are what a rerun of its own evaluation prints."""

from __future__ import annotations

import json
import re

import pytest
from tinyk2.heldout import evaluate


@pytest.fixture(scope="module")
def card_figures(bundled_model) -> dict:
    card = (bundled_model / "README.md").read_text()
    block = re.search(r"```json held-out-figures\n(.*?)```", card, re.S)
    assert block, "model card has no held-out-figures block"
    return json.loads(block.group(1))


def test_card_figures_match_a_rerun(bundled_model, card_figures):
    figures = evaluate(bundled_model, threads=2)
    assert set(figures) == set(card_figures)
    for name, value in figures.items():
        assert value == pytest.approx(card_figures[name], rel=1e-3, abs=1e-4), name


def test_card_figures_meet_the_targets(card_figures):
    assert card_figures["perplexity"] <= 0.5 * card_figures["unigram_perplexity"]
    assert card_figures["mcq_accuracy"] >= 2 * card_figures["mcq_chance"]
    assert card_figures["tool_first_step_valid"] >= 0.9
