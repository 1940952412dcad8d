"""The comparison maths on hand-made distributions."""

from __future__ import annotations

import math

import pytest
import torch

from harness import kl


def _logprobs(rows: int, vocab: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.log_softmax(scale * torch.randn(rows, vocab, generator=generator), -1)  # [N, V]


def test_full_vocabulary_kl_is_the_exact_kl_and_zero_against_itself():
    p, q = _logprobs(50, 40, 0), _logprobs(50, 40, 1)
    expected = torch.nn.functional.kl_div(q.double(), p.double(), log_target=True, reduction="none").sum(-1)
    assert torch.allclose(kl.kl_per_token(p, q, tail=False), expected)
    assert torch.equal(kl.kl_per_token(p, p, tail=False), torch.zeros(50, dtype=torch.float64))


def test_top_k_kl_with_tail_bucket_is_a_lower_bound_and_exact_on_buckets():
    p, q = _logprobs(50, 40, 0), _logprobs(50, 40, 1)
    ids = p.topk(8, -1).indices  # [N, 8]: the baseline's top-8
    top_k = kl.kl_per_token(p.gather(-1, ids), q.gather(-1, ids))
    assert (top_k <= kl.kl_per_token(p, q, tail=False) + 1e-12).all()
    p_tail = 1 - p.gather(-1, ids).exp().sum(-1)
    q_tail = 1 - q.gather(-1, ids).exp().sum(-1)
    by_hand = (p.gather(-1, ids).exp() * (p.gather(-1, ids) - q.gather(-1, ids))).sum(-1) + p_tail * (
        p_tail / q_tail
    ).log()
    assert torch.allclose(top_k, by_hand.double(), atol=1e-6)
    assert kl.kl_per_token(p.gather(-1, ids), p.gather(-1, ids)).abs().max() == 0


def test_perplexity_stderr_is_the_delta_method():
    nll = torch.tensor([1.0, 2.0, 3.0, 2.0])
    ppl, stderr = kl.perplexity(nll)
    assert ppl == math.exp(2.0)
    assert math.isclose(stderr, math.exp(2.0) * nll.double().std().item() / 2)


def test_percentiles_and_routing_statistics():
    expected = {"median": 500.0, "p90": 900.0, "p99": 990.0, "p99.9": 999.0, "max": 1000.0, "min": 0.0}
    assert kl.percentiles(torch.arange(1001.0)) == pytest.approx(expected)
    base = torch.tensor([[0, 1], [2, 3], [0, 2]])
    variant = torch.tensor([[0, 1], [2, 4], [1, 3]])
    assert kl.same_experts(base, variant).tolist() == [True, False, False]
    assert kl.expert_overlap(base, variant).tolist() == [1.0, 0.5, 0.0]
    load_b, load_v = kl.expert_load(base, 5), kl.expert_load(variant, 5)
    assert math.isclose(kl.total_variation(load_b, load_v), 1 / 3)
    assert kl.js_divergence_bits(load_b, load_b) == 0
    disjoint = kl.expert_load(torch.tensor([[0]]), 2), kl.expert_load(torch.tensor([[1]]), 2)
    assert math.isclose(kl.js_divergence_bits(*disjoint), 1.0)


def test_same_top1_counts_ties_as_agreement_on_both_sides_and_nothing_else():
    # token 0 and 1 tied at the top (as bfloat16 logits often are); rows: [base, variant] distributions
    tied = torch.log_softmax(torch.tensor([[2.0, 2.0, 1.0, 0.0]]), -1)
    clear = torch.log_softmax(torch.tensor([[2.0, 1.0, 1.5, 0.0]]), -1)
    other = torch.log_softmax(torch.tensor([[1.0, 2.0, 1.5, 0.0]]), -1)
    base = torch.cat([tied, tied, clear, clear])  # [4, V]
    variant = torch.cat([tied, clear, other, tied])  # [4, V]
    ids = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 2, 1], [0, 2, 1]])  # the baseline's top-3, its own top first
    base_kept, variant_kept = base.gather(-1, ids), variant.gather(-1, ids)
    base_top = torch.tensor([0, 0, 0, 0])  # topk's pick among the tied
    variant_top = torch.tensor([1, 0, 1, 1])  # argmax's pick: another of the tied (rows 0, 3), a real change (row 2)
    naive = base_top == variant_top
    assert naive.tolist() == [False, True, False, False]
    same = kl.same_top1(base_kept, ids, variant_kept, base_top, variant_top)
    # row 0: the baseline is tied between 0 and 1; row 3: the variant is tied between 0 and 1 (the baseline
    # is not) -> agreement; row 2: the variant prefers 1 over the baseline's 0 -> disagreement
    assert same.tolist() == [True, True, False, True]
    # with the whole vocabulary kept (no ids), the same answer
    full = kl.same_top1(base, None, variant, base_top, variant_top)
    assert full.tolist() == [True, True, False, True]
