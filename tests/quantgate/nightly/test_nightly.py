"""The nightly end to end on the bundled model, against a real `mlflow server`."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from mlflow import MlflowClient

from quantgate.tracking import names

PLAN = Path(__file__).parent / "data" / "plan.yaml"
N_PAIRS = 12  # (baseline + 2 variants) x 4 suites


def _parent(client: MlflowClient, nightly_id: str):
    experiment = client.get_experiment_by_name(names.experiment_name("test-nightly"))
    query = f"tags.`{names.TAG_NIGHTLY}` = '{nightly_id}' and tags.`{names.TAG_KIND}` = 'nightly'"
    runs = client.search_runs([experiment.experiment_id], query)
    assert len(runs) == 1, f"{len(runs)} parent runs for {nightly_id}"
    return runs[0]


def _children(client: MlflowClient, parent) -> list:
    return client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")


def _measured(output: str) -> int:
    return int(re.search(r"(\d+) pair\(s\) measured", output)[1])


def test_killed_nightly_resumes_and_measures_only_what_is_missing(first_nightly):
    done_before = len(first_nightly.killed_after)
    assert 2 <= done_before < N_PAIRS
    assert _measured(first_nightly.resumed.stdout) == N_PAIRS - done_before
    assert len(re.findall(r"\] +[\d.]+s eval .*: reused", first_nightly.resumed.stdout)) == done_before
    assert "verdict: PASS" in first_nightly.resumed.stdout
    assert "canary w2a16-g32 caught" in first_nightly.resumed.stdout


def test_nightly_logs_parent_and_a_child_per_checkpoint(first_nightly):
    client = MlflowClient(first_nightly.env.server)
    parent = _parent(client, "n1")
    tags = parent.data.tags
    assert tags[names.TAG_VERDICT] == "pass"
    assert tags[names.TAG_PLAN_HASH] and tags[names.TAG_GIT] and tags[names.TAG_HARDWARE]
    report = {a.path for a in client.list_artifacts(parent.info.run_id, names.ARTIFACT_REPORT_DIR)}
    assert {"report/report.html", "report/report.md", "report/gates.xml"} <= report
    children = {r.data.tags[names.TAG_VARIANT]: r for r in _children(client, parent)}
    assert set(children) == {"kimi-k2-tiny", "kimi-k2-thinking-int4", "w2a16-g32"}
    assert children["kimi-k2-tiny"].data.tags[names.TAG_BASELINE] == "true"
    int4 = children["kimi-k2-thinking-int4"]
    assert int4.data.params["scheme"] == "kimi-k2-thinking-int4"
    assert int4.data.params["scheme.resolved.name"] == "kimi-k2-thinking-int4"
    metrics = int4.data.metrics
    assert 0 < metrics["perplexity.kl_mean"] < 0.02
    assert 95 < metrics["perplexity.perplexity.recovery_pct"] <= 101
    assert {"toolcall.trigger_f1", "benchmark.tinyk2_mcq/acc", "latency.size_ratio"} <= set(metrics)
    files = {a.path for a in client.list_artifacts(int4.info.run_id, "suites/perplexity")}
    assert "suites/perplexity/summary.json" in files and "suites/perplexity/quantgate.json" in files


def test_report_is_self_contained_html_with_plots_and_valid_junit(first_nightly):
    folder = first_nightly.env.reports / "test-nightly" / "n1"
    page = (folder / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") >= 5
    assert "<script" not in page and "http" not in page.split("<body>", 1)[1]  # nothing fetched
    assert "caught" in page and "PASS" in page
    suite = ET.parse(folder / "gates.xml").getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) >= 10
    assert any("canary" in c.get("name", "") for c in cases)
    assert "| kimi-k2-thinking-int4 |" in (folder / "report.md").read_text()


def test_second_nightly_with_nothing_changed_measures_nothing_and_logs_no_duplicates(first_nightly):
    env = first_nightly.env
    again = env.run(env.nightly_args("n1"))
    assert again.returncode == 0, again.stderr
    assert _measured(again.stdout) == 0
    client = MlflowClient(env.server)
    parent = _parent(client, "n1")
    children = _children(client, parent)
    assert len(children) == 3
    int4 = next(r for r in children if r.data.tags[names.TAG_VARIANT] == "kimi-k2-thinking-int4")
    assert len(client.get_metric_history(int4.info.run_id, "perplexity.kl_mean")) == 1


def test_server_down_keeps_the_nightly_in_the_outbox_and_sync_uploads_it(first_nightly, closed_port_uri):
    env = first_nightly.env
    down = env.run(env.nightly_args("n-down", tracking_uri=closed_port_uri))
    assert down.returncode == 0, down.stderr
    assert "unreachable" in down.stdout and "quantgate sync" in down.stdout
    entries = [p for p in (env.state / "outbox").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "report" / "report.html").is_file()
    synced = env.run(env.command("sync", "--tracking-uri", env.server))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    client = MlflowClient(env.server)
    parent = _parent(client, "n-down")
    assert parent.data.tags[names.TAG_VERDICT] == "pass"
    assert len(_children(client, parent)) == 3
    assert "report/report.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert not [p for p in (env.state / "outbox").iterdir() if not p.name.startswith(".")]


def test_shards_log_their_slices_and_report_assembles_the_whole(first_nightly):
    env = first_nightly.env
    for shard in ("1/2", "2/2"):
        part = env.run(env.nightly_args("n-split", "--shard", shard))
        assert part.returncode == 0, part.stderr
        assert f"shard {shard} done" in part.stdout
    client = MlflowClient(env.server)
    assert names.TAG_VERDICT not in _parent(client, "n-split").data.tags
    whole = env.run(
        env.command("report", "--plan", str(PLAN), "--nightly", "n-split",
                    "--tracking-uri", env.server, "--reports", str(env.reports))
    )
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert "verdict: PASS" in whole.stdout
    assert (env.reports / "test-nightly" / "n-split" / "report.html").is_file()
    assert _parent(client, "n-split").data.tags[names.TAG_VERDICT] == "pass"


def test_gating_the_canary_as_a_real_variant_fails_with_a_reason(first_nightly):
    env = first_nightly.env
    drill = env.run(
        env.command("gate", "--results", str(env.state / "results"), "--plan", str(PLAN),
                    "--as-real", "w2a16-g32")
    )
    assert drill.returncode == 1
    assert re.search(r"w2a16-g32 fails \d+ gate\(s\): perplexity.kl_mean max_value", drill.stdout)


def test_bad_plan_is_one_line_exit_2_and_writes_nothing(first_nightly, tmp_path):
    env = first_nightly.env
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.read_text().replace("group: int4}", "group: int4, colour: red}"))
    bad = env.run(env.command("nightly", "--plan", str(plan), "--reports", str(tmp_path / "reports")))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "colour" in bad.stderr and str(plan) in bad.stderr
    assert not (tmp_path / "reports").exists()
