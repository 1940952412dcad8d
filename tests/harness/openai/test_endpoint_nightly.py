"""`quantgate nightly` with a plan whose variant is an endpoint (the real vLLM server): the BF16 baseline
is measured in process, the endpoint through the `openai` backend, the in-process latency suite is
skipped for it, and the nightly runs to a verdict with a report and MLflow runs."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from quantgate.cli import main
from quantgate.tracking import names

ROOT = Path(__file__).resolve().parents[3]
HELDOUT = ROOT / "suites" / "data" / "tinyk2" / "heldout_text.jsonl"


def test_nightly_with_an_endpoint_variant_runs_to_a_verdict(endpoint, bundled_model, tmp_path, monkeypatch, capsys):
    for name, value in {"QUANTGATE_STATE_DIR": tmp_path / "state", "QUANTGATE_CACHE": tmp_path / "cache",
                        "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "perplexity.yaml").write_text(
        f"kind: perplexity\nversion: 1\ndata: {HELDOUT}\ncontext_length: 48\nstride: 48\ntop_k: 16\n"
        "batch_size: 8\nmax_documents: 6\n"
    )
    (tmp_path / "toolcall_k2vv.yaml").write_text(
        "kind: toolcall\nversion: 1\nrequests_file: suites/data/tinyk2/k2vv_requests.jsonl\nlimit: 4\n"
    )
    (tmp_path / "latency.yaml").write_text(
        "kind: latency\nversion: 1\nbatch_sizes: [1]\nprompt_lengths: [16]\ndecode_tokens: 2\nwarmup: 1\nrepeats: 1\n"
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"version: 1\nname: endpoint-nightly\nmodel: {bundled_model}\n"
        "variants:\n  - {name: vllm, group: served, endpoint: "
        f"{{base_url: '{endpoint.base_url}', model: {endpoint.model}}}}}\n"
        "suites: [perplexity.yaml, toolcall_k2vv.yaml, latency.yaml]\n"
        "gates:\n  - {metric: perplexity.kl_mean, max_value: 0.001}\n"
        "  - {metric: toolcall_k2vv.trigger_f1, min_value: 0.9}\n"
    )
    assert main(["nightly", "--plan", str(plan), "--reports", str(tmp_path / "reports"), "--nightly-id", "e1"]) == 0
    out = capsys.readouterr().out
    assert "kimi-k2-tiny-vllm × latency: an endpoint cannot be measured by an in-process suite" in out
    assert "vllm passes all 2 gate(s)" in out and "verdict: PASS" in out
    assert (tmp_path / "reports" / "endpoint-nightly" / "e1" / "report.html").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(names.experiment_name("endpoint-nightly"))
    runs = client.search_runs([experiment.experiment_id], f"tags.`{names.TAG_KIND}` = 'variant'")
    assert {r.data.tags[names.TAG_VARIANT] for r in runs} == {"vllm", bundled_model.name}
