"""`quantgate gate` through the CLI: exit codes 0 / 1 / 2, the printed table, JUnit XML, Markdown."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from quantgate.cli import main

GOOD = (10.2, 0.01, 0.79, 0.5)  # (perplexity, kl_mean, acc, McNemar p): passes every gate
BAD = (14.0, 0.30, 0.60, 0.0001)  # fails every gate


def gate(results: Path, plan: Path, *extra: str) -> int:
    return main(["gate", "--results", str(results), "--plan", str(plan), *extra])


def test_pass_exits_0_and_prints_every_row(nightly: Callable[..., Path], plan_file: Path, capsys):
    assert gate(nightly(good=GOOD, bad=BAD), plan_file) == 0
    out = capsys.readouterr().out
    for column in ("baseline", "value", "recovery %", "threshold", "verdict"):
        assert column in out
    assert "good" in out and "bad (canary)" in out
    assert "canary bad caught by 4 gate(s)" in out
    assert out.rstrip().endswith("plan gate-test: PASS")


def test_failing_real_variant_exits_1_with_its_reason(nightly: Callable[..., Path], plan_file: Path, capsys):
    worse = (10 / 0.945, 0.01, 0.79, 0.5)  # perplexity recovery 94.5 % < 95 %
    assert gate(nightly(good=worse, bad=BAD), plan_file) == 1
    out = capsys.readouterr().out
    assert "good fails 1 gate(s): perplexity.perplexity min_recovery: recovery 94.5" in out
    assert out.rstrip().endswith("FAIL")


def test_canary_passing_everything_exits_1(nightly: Callable[..., Path], plan_file: Path, capsys):
    assert gate(nightly(good=GOOD, bad=GOOD), plan_file) == 1
    assert "lost the sensitivity" in capsys.readouterr().out


def test_canary_gated_as_real_exits_1_readably(nightly: Callable[..., Path], plan_file: Path, capsys):
    assert gate(nightly(good=GOOD, bad=BAD), plan_file, "--as-real", "bad") == 1
    out = capsys.readouterr().out
    assert "bad fails 4 gate(s): perplexity.perplexity min_recovery: recovery" in out


@pytest.mark.parametrize(
    "problem",
    ["unknown key", "missing results", "unknown --as-real", "no arguments"],
)
def test_input_errors_exit_2_with_one_line(
    nightly: Callable[..., Path], plan_file: Path, tmp_path: Path, capsys, problem: str
):
    results = nightly(good=GOOD, bad=BAD)
    if problem == "unknown key":
        plan_file.write_text(plan_file.read_text().replace("max_value: 0.05", "max_valu: 0.05"))
        code, expected = gate(results, plan_file), "unknown key 'gates.1.max_valu'"
    elif problem == "missing results":
        code, expected = gate(tmp_path / "nowhere", plan_file), "nowhere: missing"
    elif problem == "unknown --as-real":
        code, expected = (
            gate(results, plan_file, "--as-real", "ghost"),
            "unknown variant 'ghost'; the plan's variants: good, bad",
        )
    else:
        with pytest.raises(SystemExit) as exit_:
            main(["gate"])
        code, expected = exit_.value.code, "required"
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err
    if problem != "no arguments":
        assert err.count("\n") == 1


def test_junit_xml_has_one_testcase_per_row(nightly: Callable[..., Path], plan_file: Path, tmp_path: Path):
    worse = (10 / 0.945, 0.01, 0.79, 0.5)
    junit = tmp_path / "out" / "gates.xml"
    assert gate(nightly(good=worse, bad=BAD), plan_file, "--junit", str(junit)) == 1
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["gate-test.good", "gate-test.bad", "gate-test.nightly"]
    good, bad, verdict = suites
    cases = good.findall("testcase")
    assert len(cases) == int(good.get("tests")) == 4  # one per gate row: 1 + 1 + 2 thresholds
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == int(good.get("failures")) == 1
    assert failures[0].get("name") == "perplexity.perplexity min_recovery"
    assert "recovery 94.5" in failures[0].find("failure").get("message")
    # a canary's rows are expected to fail; its outcome is the "canary caught" case
    bad_cases = {c.get("name"): c for c in bad.findall("testcase")}
    assert "canary caught" in bad_cases and bad_cases["canary caught"].find("failure") is None
    assert all(c.find("failure") is None for c in bad_cases.values())
    [nightly_case] = verdict.findall("testcase")
    assert "good fails 1 gate(s)" in nightly_case.find("failure").get("message")
    assert int(root.get("tests")) == 10 and int(root.get("failures")) == 2 and int(root.get("errors")) == 0


def test_markdown_summary(nightly: Callable[..., Path], plan_file: Path, tmp_path: Path):
    summary = tmp_path / "summary.md"
    assert gate(nightly(good=GOOD, bad=GOOD), plan_file, "--markdown", str(summary)) == 1
    text = summary.read_text()
    assert text.startswith("## quantgate gates: gate-test — FAIL")
    header = "| variant | metric | gate | baseline | value | recovery % | threshold | detectable | verdict | reason |"
    assert header in text
    assert "lost the sensitivity" in text
    assert text.count("\n| good |") == 4
