"""plans/gpu.yaml: `--dry-run` prints the vLLM servers the nightly would start (flags from the model, the
plan's GPU settings) on any machine; without GPUs the preflight refuses the plan in one line, before
anything is built, as it refuses in-process GPU settings and lm-eval's vllm model."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantgate.cli import main

ROOT = Path(__file__).resolve().parents[3]
GPU_PLAN = ROOT / "plans" / "gpu.yaml"


@pytest.fixture
def no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine that shows no GPU (CUDA_VISIBLE_DEVICES empty), with its own state folder."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("QUANTGATE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "state"


def test_dry_run_prints_the_servers_with_their_flags(no_gpu, capsys):
    assert main(["nightly", "--plan", str(GPU_PLAN), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    servers = [line for line in lines if line.startswith("server ")]
    print("\n".join(servers))
    assert [s.split(":")[0] for s in servers] == [
        "server kimi-k2-tiny",
        "server kimi-k2-tiny-kimi-k2-thinking-int4-rtn",
    ]
    for server in servers:
        assert server.split(": ", 1)[1].startswith("CUDA_VISIBLE_DEVICES=0 ")
        for flag in ("--dtype bfloat16", "--tensor-parallel-size 1", "--gpu-memory-utilization 0.5",
                     "--max-logprobs 64", "--tool-call-parser kimi_k2", "--enable-auto-tool-choice"):  # fmt: skip
            assert flag in server
        assert "--enforce-eager" not in server  # CPU-only flags stay off a GPU server
    assert f"--model {ROOT / 'models' / 'kimi-k2-tiny'} " in servers[0]
    assert f"--model {no_gpu / 'variants' / 'kimi-k2-tiny-kimi-k2-thinking-int4-rtn'} " in servers[1]
    assert servers[1].endswith("# built first")
    assert sum(line.startswith("measure ") for line in lines) == 8  # 2 checkpoints x 4 suites
    assert not no_gpu.exists()  # nothing built, nothing written


def test_without_gpus_the_plan_fails_in_the_preflight_before_anything_is_built(no_gpu, capsys):
    assert main(["nightly", "--plan", str(GPU_PLAN)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"quantgate: error: {GPU_PLAN}: serve: vllm on cuda with tensor_parallel_size x data_parallel_size = "
        "1 GPU(s) per server; this machine has 0 (--dry-run prints what it would start)"
    )
    assert not no_gpu.exists()


@pytest.mark.parametrize(
    ("in_process", "flags", "named"),
    [
        ("{device: cuda, dtype: bfloat16}", [], "in_process: device cuda needs a GPU"),
        ("{device_map: auto}", [], "in_process: device_map auto needs a GPU"),
        ("{lm_eval_model: vllm}", [], "in_process: lm_eval_model vllm needs a GPU"),
        ("{}", ["--device", "cuda:1"], "in_process: device cuda:1 needs a GPU"),
    ],
)
def test_in_process_gpu_settings_fail_in_the_preflight(no_gpu, tmp_path, capsys, in_process, flags, named):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        GPU_PLAN.read_text().split("serve:")[0].replace("../models/", f"{ROOT}/models/")
        + f"in_process: {in_process}\ngates:\n  - {{metric: perplexity.kl_mean, max_value: 0.01}}\n"
    )
    assert main(["nightly", "--plan", str(plan), *flags]) == 2
    assert capsys.readouterr().err.strip() == f"quantgate: error: {plan}: {named}; this machine has none"
    assert not no_gpu.exists()


@pytest.mark.parametrize(
    ("line", "replacement", "named"),
    [
        ("engine: vllm", "engine: tgi", "unknown engine 'tgi'; known: vllm"),
        ("gpus: [0]", "gpus: [0, 1]", "gpus: 2 listed for tensor_parallel_size x data_parallel_size = 1 ranks"),
        ("concurrency: 16", "concurency: 16", "concurency"),
    ],
)
def test_serve_settings_are_typed(tmp_path, capsys, line, replacement, named):
    plan = tmp_path / "plan.yaml"
    plan.write_text(GPU_PLAN.read_text().replace("../models/", f"{ROOT}/models/").replace(line, replacement))
    assert main(["nightly", "--plan", str(plan), "--dry-run"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"quantgate: error: {plan}: ") and named in error and "\n" not in error


def test_raw_tool_calls_change_the_served_identity_and_chat_changes_nothing():
    from quantgate.plan import load_plan

    plan = load_plan(GPU_PLAN)
    chat = plan.model_copy(update={"serve": plan.serve.model_copy(update={"toolcall_mode": "chat"})})
    raw = plan.model_copy(update={"serve": plan.serve.model_copy(update={"toolcall_mode": "raw"})})
    assert plan.serve.toolcall_mode == "chat"  # the default: identities and digests as before the option
    assert chat.serve.digest() == plan.serve.digest() and chat.digest() == plan.digest()
    assert raw.serve.digest() != plan.serve.digest() and raw.digest() != plan.digest()
