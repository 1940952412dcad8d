"""`quantgate eval` end to end: result folders, the baseline cached once, byte-stable summaries, bad input."""

from __future__ import annotations

import json
from pathlib import Path

from quantgate.cli import main


def _eval(model: Path, baseline: Path, suites: list[Path], out: Path, cache: Path) -> int:
    suite_args = [arg for suite in suites for arg in ("--suite", str(suite))]
    return main(
        [
            "eval",
            "--model",
            str(model),
            "--baseline",
            str(baseline),
            *suite_args,
            "--out",
            str(out),
            "--cache-dir",
            str(cache),
            "--batch-size",
            "8",
        ]
    )


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def test_eval_writes_results_and_reuses_the_cached_baseline(
    bundled_model, variant_dir, perplexity_suite, latency_suite, tmp_path, capsys
):
    variant, suites = variant_dir("kimi-k2-thinking-int4"), [perplexity_suite(max_documents=8), latency_suite]
    out, cache = tmp_path / "results", tmp_path / "cache"
    assert _eval(variant, bundled_model, suites, out, cache) == 0
    printed = capsys.readouterr()
    with capsys.disabled():
        print("\n" + printed.out)  # the closing table, as a user sees it (-s)
    table = {tuple(line.split()[:3]) for line in printed.out.splitlines()}
    assert {(variant.name, "ppl", "kl_mean"), (variant.name, "lat", "size_ratio")} <= table
    assert f"full results: {out}/<model>/<suite>/summary.json" in printed.out
    assert "it/s" not in printed.err and "Loading weights" not in printed.err  # library bars are quiet

    base_ppl, variant_ppl = out / bundled_model.name / "ppl", out / variant.name / "ppl"
    for folder in (base_ppl, variant_ppl, out / bundled_model.name / "lat", out / variant.name / "lat"):
        assert {p.name for p in folder.iterdir()} >= {
            "summary.json",
            "samples.jsonl",
            "environment.json",
            "timings.json",
        }
        for metric in _summary(folder)["metrics"]:
            assert set(metric) >= {"name", "value", "direction", "stderr", "n"}
    summary = _summary(variant_ppl)
    assert summary["model"]["role"] == "variant" and summary["baseline"]["path"] == str(bundled_model)
    comparison = {m["name"]: m for m in summary["comparison"]}
    assert comparison["kl_mean"]["direction"] == "lower" and comparison["kl_mean"]["stderr"] > 0
    assert set(summary["by_layer"]) == {"1", "2", "3"}
    assert len((variant_ppl / "samples.jsonl").read_text().splitlines()) == 8
    latency = {m["name"]: m for m in _summary(out / variant.name / "lat")["comparison"]}
    assert latency["size_ratio"]["value"] < 1 and latency["size_ratio"]["direction"] == "lower"
    bf16_bits = {m["name"]: m["value"] for m in _summary(out / bundled_model.name / "lat")["metrics"]}
    assert 16 <= bf16_bits["bits_per_weight"] < 16.5  # BF16 + a float32 router bias + headers

    entries = sorted(cache.iterdir())
    written = {e: (e / "summary.json").stat().st_mtime_ns for e in entries}
    first_summary = (variant_ppl / "summary.json").read_bytes()
    assert _eval(variant, bundled_model, suites, out, cache) == 0
    assert {e: (e / "summary.json").stat().st_mtime_ns for e in sorted(cache.iterdir())} == written
    timings = json.loads((base_ppl / "timings.json").read_text())
    assert timings["baseline_cache"] == "hit" and "load_s" not in timings["model"]  # baseline never loaded
    assert (variant_ppl / "summary.json").read_bytes() == first_summary


def test_bad_suite_exits_2_naming_file_and_key(bundled_model, perplexity_suite, tmp_path, capsys):
    suite = perplexity_suite("typo.yaml", strid=48)
    assert _eval(bundled_model, bundled_model, [suite], tmp_path / "r", tmp_path / "c") == 2
    expected = f"quantgate: error: {suite}: unknown key 'typo.strid' (did you mean 'stride'?)\n"
    assert capsys.readouterr().err == expected
    missing = perplexity_suite("gone.yaml", data="/nonexistent/text.jsonl")
    assert _eval(bundled_model, bundled_model, [missing], tmp_path / "r", tmp_path / "c") == 2
    assert "gone.data: data file not found (/nonexistent/text.jsonl)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
