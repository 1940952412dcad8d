from __future__ import annotations

from pathlib import Path

import pytest

from quantgate.core.errors import InputError
from quantgate.nightly.matrix import matrix, parse_shard, shard_of
from quantgate.plan import load_plan

PLAN = Path(__file__).parent / "data" / "plan.yaml"


def test_matrix_is_baseline_first_then_variants_in_plan_order():
    pairs = matrix(load_plan(PLAN))
    assert [p.checkpoint for p in pairs[:4]] == ["kimi-k2-tiny"] * 4
    assert pairs[4].checkpoint == "kimi-k2-tiny-kimi-k2-thinking-int4-rtn"
    assert pairs[-1].label == "kimi-k2-tiny-w2a16-g32-rtn × latency"
    assert len(pairs) == 12


@pytest.mark.parametrize("count", [1, 2, 3, 5, 12, 13])
def test_shards_cover_the_matrix_exactly_once(count):
    pairs = matrix(load_plan(PLAN))
    slices = [shard_of(pairs, parse_shard(f"{i}/{count}")) for i in range(1, count + 1)]
    assert [p for s in slices for p in s] == pairs  # contiguous, in order, nothing twice
    assert max(map(len, slices)) - min(map(len, slices)) <= 1


@pytest.mark.parametrize("text", ["0/2", "3/2", "1-2", "a/b", "1/0"])
def test_bad_shard_is_an_input_error(text):
    with pytest.raises(InputError, match="--shard"):
        parse_shard(text)
