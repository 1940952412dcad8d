"""Plan files: typed, versioned, unknown keys rejected naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantgate.core.errors import InputError
from quantgate.plan import load_plan

ROOT = Path(__file__).resolve().parents[3]


def test_shipped_nightly_plan_loads():
    plan = load_plan(ROOT / "plans" / "nightly.yaml")
    assert plan.baseline_name == "kimi-k2-tiny"
    assert plan.suites == ["perplexity", "benchmark", "toolcall", "longhorizon", "latency"]
    real = {v.name for v in plan.variants if not v.canary}
    assert real == {"kimi-k2-thinking-int4", "kimi-k2-thinking-int4-gptq", "w4a16-g128", "w8a16", "fp8-block"}
    assert {v.name for v in plan.variants if v.canary} == {"w3a16-g32", "w2a16-g32"}
    assert {v.method for v in plan.variants} == {"rtn", "gptq"}
    canary_groups = {v.group for v in plan.variants if v.canary}
    assert canary_groups == {plan.variant("kimi-k2-thinking-int4").group}, "canaries share the int4 gates"
    assert all(plan.gates_for(v) for v in plan.variants), "every variant, canaries included, has gates"
    assert plan.checkpoint_name(plan.variant("w8a16")) == "kimi-k2-tiny-w8a16-rtn"
    history = {g.metric for g in plan.gates if g.history is not None and g.groups is None}
    main = {"perplexity.kl_mean", "perplexity.perplexity", "benchmark.tinyk2_mcq/acc", "toolcall.task_success"}
    assert main <= history


def test_digest_is_stable_across_checkouts(plan_file: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "plan.yaml").write_text(plan_file.read_text())
    assert load_plan(plan_file).digest() == load_plan(elsewhere / "plan.yaml").digest()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("min_recovery: 95}", "min_recovry: 95}"), "unknown key 'gates.0.min_recovry'"),
        (("group: int4, canary", "group: int4, canry"), "unknown key 'variants.1.canry'"),
        (("version: 1", "version: 2"), "version"),
        (("method: rtn, group: int4}", "method: awq, group: int4}"), "variants.0.method"),
        (
            ("{metric: perplexity.kl_mean, max_value: 0.05}", "{metric: perplexity.kl_mean}"),
            "has no threshold",
        ),
        (
            ("{metric: perplexity.kl_mean,", "{metric: latency.size_ratio,"),
            "suite 'latency' is not in suites",
        ),
        (
            ("{metric: perplexity.kl_mean,", "{metric: perplexity.kl_mean, groups: [int9],"),
            "unknown group 'int9'",
        ),
        (("p_value: benchmark.acc_mcnemar_p, ", ""), "exactly one of 'p_value' and 'interval'"),
        (("name: bad,", "name: good,"), "variant names repeat: good"),
        (("max_value: 0.05}", "max_value: 0.05, history: {alpha: 2}}"), "gates.1.history.alpha"),
        (("max_value: 0.05}", "max_value: 0.05, history: {since: n1}}"), "unknown key 'gates.1.history.since'"),
    ],
)
def test_bad_plans_name_file_and_key(plan_file: Path, edit: tuple[str, str], message: str):
    text = plan_file.read_text()
    assert edit[0] in text
    plan_file.write_text(text.replace(*edit, 1))
    with pytest.raises(InputError) as error:
        load_plan(plan_file)
    assert str(plan_file) in str(error.value)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_rtn_takes_no_calibration(plan_file: Path):
    plan_file.write_text(
        plan_file.read_text().replace(
            "method: rtn, group: int4}", "method: rtn, calibration: c4, group: int4}", 1
        )
    )
    with pytest.raises(InputError, match="data-free"):
        load_plan(plan_file)
