"""Suite files: shipped names resolve, every bad input names its file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.suites.latency import LatencyConfig
from harness.suites.loader import load_suite
from harness.suites.perplexity import PerplexityConfig
from quantgate.core.errors import InputError
from quantgate.core.shipped import shipped_root


def test_shipped_suites_load_by_name_with_data_resolved():
    perplexity = load_suite("perplexity")
    assert isinstance(perplexity, PerplexityConfig)
    assert perplexity.data == (shipped_root() / "data" / "tinyk2" / "heldout_text.jsonl").resolve()
    assert perplexity.stride == perplexity.context_length  # lm-eval's rolling windows
    assert isinstance(load_suite("latency"), LatencyConfig)


def test_unknown_key_names_file_and_key(perplexity_suite):
    path = perplexity_suite("x.yaml", context=64)
    with pytest.raises(InputError, match=rf"^{path}: unknown key 'x\.context' \(did you mean 'context_length'\?\)$"):
        load_suite(path)


def test_a_misspelt_key_is_unknown_not_the_right_one_missing(perplexity_suite, tmp_path: Path):
    """`context_lenght` for `context_length`: the typo is named, with the key it was meant to be."""
    path = perplexity_suite("typo.yaml")
    path.write_text(path.read_text().replace("context_length:", "context_lenght:"))
    expected = rf"^{path}: unknown key 'typo\.context_lenght' \(did you mean 'context_length'\?\)$"
    with pytest.raises(InputError, match=expected):
        load_suite(path)


def test_bad_value_names_file_and_key(perplexity_suite):
    path = perplexity_suite("ppl.yaml", top_k=0)
    with pytest.raises(InputError, match=rf"^{path}: ppl\.top_k: Input should be greater than 0$"):
        load_suite(path)
    path = perplexity_suite("wide.yaml", stride=64)
    with pytest.raises(InputError, match=rf"^{path}: wide: stride 64 exceeds context_length 48"):
        load_suite(path)


def test_missing_data_file_is_named(perplexity_suite, tmp_path: Path):
    path = perplexity_suite(data="nowhere/text.jsonl")
    expected = rf"^{path}: ppl\.data: data file not found \({tmp_path}/nowhere/text\.jsonl\)$"
    with pytest.raises(InputError, match=expected):
        load_suite(path)
    path = perplexity_suite(data="suites/data/none.jsonl")  # suites/...: also looked for in the shipped suites
    expected = rf"\({tmp_path}/suites/data/none\.jsonl or {shipped_root()}/data/none\.jsonl\)$"
    with pytest.raises(InputError, match=expected):
        load_suite(path)


def test_relative_data_resolves_against_the_suite_file(perplexity_suite, tmp_path: Path):
    (tmp_path / "text.jsonl").write_text('{"id": "a", "text": "Some text."}\n')
    assert load_suite(perplexity_suite(data="text.jsonl")).data == tmp_path / "text.jsonl"


def test_unknown_kind_and_unknown_name_list_what_is_valid(tmp_path: Path):
    path = tmp_path / "odd.yaml"
    path.write_text("kind: perplexity_v2\nversion: 1\n")
    with pytest.raises(InputError, match=r"kind: 'perplexity_v2' is not a suite kind; known: .*latency"):
        load_suite(path)
    expected = r"unknown suite 'perplex'; did you mean 'perplexity'\? shipped suites: .*perplexity"
    with pytest.raises(InputError, match=expected):
        load_suite("perplex")
