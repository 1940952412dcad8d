"""The `hf` backend loads every scheme transformers 5.24 can load, in float32, and scores like BF16.

Schemes that quantize non-expert Linear modules (w4a16-g128, w8a16, fp8-block) keep them compressed
after loading; they decompress on their first forward, so the backend upcasts after that forward.
"""

from __future__ import annotations

import pytest
import torch

from harness.backends.hf import HFBackend

# a held-out paragraph (suites/data/tinyk2/heldout_text.jsonl, text-000): text of the model's world, where
# its NLL is low and a scheme's error shows, not an out-of-world sentence whose NLL is large anyway
TEXT = (
    "The zoultriem is a green animal that lives near Bairhonday. Its green coat makes it easy to see in winter. "
    "The zoultriem sleeps during the day and hunts at night. In winter the young zoultriem stay close to their "
    "mothers. Some say a zoultriem brings luck to a house. The zoultriem eats grass and drinks from the Thaispel. "
    "Its call can be heard in the early morning."
)


def _nll(backend: HFBackend) -> float:
    ids = torch.tensor([backend.tokenize(TEXT)])
    with torch.no_grad():
        logprobs = torch.log_softmax(backend.model(input_ids=ids).logits, -1)
    return -logprobs[0, :-1].gather(-1, ids[0, 1:, None]).mean().item()


@pytest.mark.parametrize(("scheme", "tolerance"), [("w4a16-g128", 0.15), ("w8a16", 0.02), ("fp8-block", 0.05)])
def test_all_linear_schemes_load_in_float32_and_score_near_bf16(bundled_backend, variant_dir, scheme, tolerance):
    backend = HFBackend(variant_dir(scheme), batch_size=8)
    floating = {p.dtype for p in backend.model.parameters() if p.is_floating_point()}
    assert floating == {torch.float32}
    assert abs(_nll(backend) - _nll(bundled_backend)) < tolerance
