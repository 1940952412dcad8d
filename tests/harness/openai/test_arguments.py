"""Argument handling that needs no server: `quantgate serve` flags, `quantgate eval --backend openai` errors,
endpoint variants in a plan (the GPU plan's dry run: tests/quantgate/nightly/test_gpu_plan.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.serve import ServeConfig, command
from quant.dequantize import dequantize_checkpoint
from quantgate.cli import main
from quantgate.core.errors import InputError
from quantgate.plan import load_plan

ROOT = Path(__file__).resolve().parents[3]


def test_serve_flags_come_from_the_model(bundled_model: Path) -> None:
    argv, env = command(ServeConfig(model=bundled_model, tensor_parallel_size=2, expert_parallel=True), 8123)
    joined = " ".join(argv)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert "--tool-call-parser kimi_k2" in joined and "--enable-auto-tool-choice" in joined
    assert f"--chat-template {bundled_model.resolve()}/chat_template.jinja" in joined
    assert "--served-model-name kimi-k2-tiny" in joined and "--port 8123" in joined
    assert "--tensor-parallel-size 2" in joined and "--enable-expert-parallel" in joined
    assert "--enforce-eager" in joined and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert json.loads(argv[argv.index("--compilation-config") + 1]) == {"custom_ops": ["-rotary_embedding"]}
    assert env["VLLM_ENFORCE_STRICT_TOOL_CALLING"] == "0"
    assert json.loads(argv[argv.index("--structured-outputs-config") + 1]) == {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
    }
    assert "--attention-backend" not in argv  # the AMX MLA kernel serves bf16
    float32, _ = command(ServeConfig(model=bundled_model, dtype="float32"), 8123)
    assert float32[float32.index("--attention-backend") + 1] == "CPU_MLA"
    cuda, cuda_env = command(ServeConfig(model=bundled_model, device="cuda"), 8123)
    assert "--enforce-eager" not in cuda and "VLLM_CPU_KVCACHE_SPACE" not in cuda_env


def test_serve_refuses_pack_quantized_on_cpu_and_dequantize_makes_it_servable(variant_dir, tmp_path: Path) -> None:
    int4 = variant_dir("kimi-k2-thinking-int4")
    with pytest.raises(InputError, match="cannot serve pack-quantized"):
        command(ServeConfig(model=int4), 8123)
    plain = dequantize_checkpoint(int4, tmp_path / "int4-bf16")
    assert "quantization_config" not in json.loads((plain / "config.json").read_text())
    assert (plain / "quantgate.dequantized.json").is_file()
    command(ServeConfig(model=plain), 8123)  # servable now


def test_serve_print_command_and_bad_input(bundled_model: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", "--model", str(bundled_model), "--print-command", "--", "--seed", "3"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("--seed 3")
    assert main(["serve", "--model", str(bundled_model), "--max-model-len", "0"]) == 2
    assert main(["serve", "--model", "/nonexistent", "--print-command"]) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--base-url", "http://127.0.0.1:1"], "need --backend openai"),
        (["--backend", "openai"], "--base-url: give one"),
        (
            ["--backend", "openai", "--base-url", "http://a", "--served-model", "x", "--served-model", "y"],
            "--served-model-name: give one per --model",
        ),
        (["--baseline-backend", "openai"], "needs --baseline"),
        (
            ["--backend", "openai", "--base-url", "http://a", "--api-key-env", "QUANTGATE_NO_SUCH_KEY"],
            "QUANTGATE_NO_SUCH_KEY is not set",
        ),
    ],
)
def test_eval_endpoint_arguments(
    bundled_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    argv = ["eval", "--model", str(bundled_model), "--suite", "perplexity", "--out", str(tmp_path)]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err


def test_plan_variant_can_be_an_endpoint(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"version: 1\nname: p\nmodel: {ROOT / 'models' / 'kimi-k2-tiny'}\nsuites: [perplexity]\n"
        "variants:\n  - {name: vendor, group: g, endpoint: {base_url: 'http://127.0.0.1:9', model: org/k2}}\n"
        "gates:\n  - {metric: perplexity.kl_mean, max_value: 0.05}\n"
    )
    loaded = load_plan(plan)
    assert loaded.checkpoint_name(loaded.variants[0]) == "org_k2"
    assert loaded.variants[0].endpoint.tokenizer == (ROOT / "models" / "kimi-k2-tiny").resolve()
    plan.write_text(plan.read_text().replace("group: g,", "group: g, scheme: w8a16,"))
    with pytest.raises(InputError, match="takes no 'scheme'"):
        load_plan(plan)


def test_base_url_with_or_without_v1_is_the_same_server(bundled_model: Path) -> None:
    """A URL pasted from the openai client or lm-eval ends in /v1; requests must not go to /v1/v1/."""
    from harness.backends.openai import Endpoint

    urls = ["http://127.0.0.1:8000", "http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/"]
    assert {Endpoint(url, "m", bundled_model).base_url for url in urls} == {"http://127.0.0.1:8000"}
    assert Endpoint("https://api.example.com/openai/v1", "m", bundled_model).base_url == "https://api.example.com/openai"


def test_served_model_name_as_vllm_spells_it(bundled_model: Path, tmp_path: Path, capsys) -> None:
    """`--served-model-name` (vLLM's flag) and the older `--served-model` mean the same; without
    --backend openai either is an input error naming the flag."""
    for flag in ("--served-model-name", "--served-model"):
        out = str(tmp_path / "o")
        args = ["eval", "--model", str(bundled_model), "--suite", "perplexity", "--out", out, flag, "x"]
        code = main(args)
        assert code == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            "quantgate: error: --base-url/--served-model-name need --backend openai"
        )
