"""`quantgate eval` with an endpoint variant (the real vLLM server) against the in-process BF16 baseline,
the serving_latency suite, and a plan whose variant is that endpoint judged to a verdict by `quantgate gate`."""

from __future__ import annotations

import json
from pathlib import Path

from quantgate.cli import main

ROOT = Path(__file__).resolve().parents[3]
HELDOUT = ROOT / "suites" / "data" / "tinyk2" / "heldout_text.jsonl"


def _suites(folder: Path) -> list[Path]:
    ppl = folder / "perplexity.yaml"
    ppl.write_text(
        f"kind: perplexity\nversion: 1\ndata: {HELDOUT}\ncontext_length: 48\nstride: 48\ntop_k: 16\n"
        "batch_size: 8\nmax_documents: 6\n"
    )
    latency = folder / "serving_latency.yaml"
    latency.write_text(
        "kind: serving_latency\nversion: 1\nconcurrency: [1, 4]\nprompt_lengths: [16]\noutput_tokens: 8\n"
        "requests: 4\nwarmup: 1\n"
    )
    k2vv = folder / "toolcall_k2vv.yaml"
    k2vv.write_text("kind: toolcall\nversion: 1\nrequests_file: suites/data/tinyk2/k2vv_requests.jsonl\nlimit: 4\n")
    return [ppl, latency, k2vv]


def test_endpoint_variant_eval_and_gate(endpoint, bundled_model: Path, tmp_path: Path, capsys) -> None:
    ppl, latency_suite, k2vv = _suites(tmp_path)
    out = tmp_path / "results"
    endpoint_args = ["--backend", "openai", "--base-url", endpoint.base_url, "--served-model", endpoint.model]
    common = ["--model", str(bundled_model), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    argv = ["eval", *endpoint_args, *common, "--baseline", str(bundled_model), "--threads", "2"]
    assert main(argv + ["--suite", str(ppl), "--suite", str(k2vv)]) == 0
    variant = out / endpoint.model
    summary = json.loads((variant / "perplexity" / "summary.json").read_text())
    assert summary["model"]["served_model"] == endpoint.model
    kl = {m["name"]: m["value"] for m in summary["comparison"]}["kl_mean"]
    assert kl < 1e-3
    assert (out / ".requests" / f"{endpoint.model}.jsonl").is_file()

    # serving latency is the endpoint's own (an in-process baseline has none: exit 2, one line)
    assert main(["eval", *endpoint_args, *common, "--baseline", str(bundled_model), "--suite", str(latency_suite)]) == 2
    assert "serving_latency needs an endpoint backend" in capsys.readouterr().err
    assert main(["eval", *endpoint_args, *common, "--suite", str(latency_suite)]) == 0
    latency = json.loads((variant / "serving_latency" / "summary.json").read_text())
    names = {m["name"] for m in latency["metrics"]}
    assert {"ttft_ms_p50.c4_p16_o8", "itl_ms_p99.c1_p16_o8", "output_tokens_per_s.c4_p16_o8"} <= names
    assert latency["details"]["kernel"] == "as served"

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"version: 1\nname: endpoint-check\nmodel: {bundled_model}\n"
        "variants:\n  - {name: vllm, group: served, endpoint: "
        f"{{base_url: '{endpoint.base_url}', model: {endpoint.model}}}}}\n"
        "suites: [perplexity, toolcall_k2vv]\n"
        "gates:\n  - {metric: perplexity.kl_mean, max_value: 0.001}\n"
        "  - {metric: perplexity.perplexity, min_recovery: 99.5}\n"
        "  - {metric: toolcall_k2vv.trigger_f1, min_value: 0.9}\n"
    )
    capsys.readouterr()
    assert main(["gate", "--results", str(out), "--plan", str(plan)]) == 0
    assert "vllm passes all 3 gate(s)" in capsys.readouterr().out
