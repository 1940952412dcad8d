"""The `openai` backend through a real vLLM server agrees with the `hf` backend on the bundled model:
perplexity within 0.5 % (and KL ~ 0), the same multiple-choice and arithmetic scores per sample, and the
same tool-call decisions on >= 95 % of steps in raw and chat mode. A subset; bench/backend_agreement.py
prints the whole comparison."""

from __future__ import annotations

from pathlib import Path

import pytest
from backend_agreement import step_agreement  # bench/ (on the path: conftest.py)

from harness.backends.base import Window
from harness.suites.base import suite_kind
from harness.suites.loader import load_suite
from harness.suites.perplexity import PerplexityConfig

HELDOUT = Path(__file__).resolve().parents[3] / "suites" / "data" / "tinyk2" / "heldout_text.jsonl"


@pytest.fixture(scope="module")
def small_perplexity() -> PerplexityConfig:
    return PerplexityConfig(
        name="ppl",
        kind="perplexity",
        version=1,
        data=HELDOUT,
        context_length=48,
        stride=48,
        top_k=16,
        batch_size=8,
        max_documents=8,
    )


@pytest.fixture(scope="module")
def hf_toolcall(bundled_backend, tmp_path_factory: pytest.TempPathFactory):
    config = load_suite("toolcall").model_copy(update={"limit": 4})
    return config, suite_kind("toolcall").measure(config, bundled_backend, tmp_path_factory.mktemp("hf_toolcall"))


def test_echo_logprobs_match_hf_and_bos_is_not_doubled(bundled_backend, openai_backend) -> None:
    backend = openai_backend()
    ids = backend.tokenize("The baker in the river town sells bread.")
    assert ids == bundled_backend.tokenize("The baker in the river town sells bread.") and ids.count(0) == 1
    window = [Window(ids, len(ids) - 1)]
    hf, oa = bundled_backend.score_windows(window, 8)[0], backend.score_windows(window, 8)[0]
    assert (hf.target_logprobs - oa.target_logprobs).abs().max() < 1e-3
    assert hf.top_ids.tolist() == oa.top_ids.tolist()


def test_perplexity_and_kl_agree(bundled_backend, openai_backend, small_perplexity, tmp_path: Path) -> None:
    kind = suite_kind("perplexity")
    base = kind.measure(small_perplexity, bundled_backend, tmp_path / "hf")
    mine = kind.measure(small_perplexity, openai_backend(), tmp_path / "openai")
    ppl_hf, ppl_oa = base.metrics[0].value, mine.metrics[0].value
    assert abs(ppl_oa - ppl_hf) / ppl_hf < 0.005
    against = kind.measure_against(small_perplexity, openai_backend(), tmp_path / "against", base)
    compared = {m.name: m.value for m in kind.compare(small_perplexity, against, base)}
    assert compared["kl_mean"] < 1e-3 and compared["same_top1"] > 99
    assert not any(name.startswith("routing_") for name in compared)  # no routing through an endpoint


def test_journal_means_a_rerun_sends_nothing(openai_backend, small_perplexity, tmp_path: Path) -> None:
    kind = suite_kind("perplexity")
    first = openai_backend()
    kind.measure(small_perplexity, first, tmp_path / "a")
    again = openai_backend()  # same journal file
    kind.measure(small_perplexity, again, tmp_path / "b")
    assert first.client.sent > 0 and again.client.sent == 0


def test_benchmark_scores_are_the_same(bundled_backend, openai_backend, tmp_path: Path) -> None:
    config = load_suite("benchmark").model_copy(update={"limit": 8})
    kind = suite_kind("benchmark")
    hf = kind.measure(config, bundled_backend, tmp_path / "hf")
    oa = kind.measure(config, openai_backend(), tmp_path / "oa")
    assert [(r["task"], r["doc_id"], r["correct"]) for r in hf.samples] == [
        (r["task"], r["doc_id"], r["correct"]) for r in oa.samples
    ]


@pytest.mark.parametrize("mode", ["raw", "chat"])
def test_toolcall_decisions_agree(hf_toolcall, openai_backend, mode: str, tmp_path: Path) -> None:
    config, hf = hf_toolcall
    oa = suite_kind("toolcall").measure(config, openai_backend(mode), tmp_path / mode)
    same, total = step_agreement(hf.samples, oa.samples)
    assert total > 0 and same / total >= 0.95, (same, total)
