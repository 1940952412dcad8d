"""`quantgate eval`."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from quantgate.core.errors import InputError
from quantgate.core.paths import output_folder
from quantgate.core.reference import resolve_reference

DEVICE = re.compile(r"(cpu|cuda|mps)(:\d+)?")
TASKS_INCLUDE_PATH = "suites/lmeval"
TASKS_SUITE = "lm_eval"  # the results folder of `eval --tasks`
TASK_FLAGS = ("num_fewshot", "apply_chat_template", "gen_kwargs", "limit")


def default_cache_dir() -> Path:
    root = (
        os.environ.get("QUANTGATE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "quantgate"
    )
    return Path(root) / "baselines"


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", action="append", required=True,
        help="checkpoint to measure (repeatable): a folder, its model.safetensors, or a Hugging Face ORG/NAME[@REV]",
    )
    parser.add_argument(
        "--baseline", help="BF16 checkpoint each model is compared with (cached): a folder or ORG/NAME[@REV]"
    )
    parser.add_argument(
        "--suite",
        action="append",
        default=[],
        help="suite name (suites/NAME.yaml) or path to a suite file (repeatable); or --tasks",
    )
    tasks = parser.add_argument_group(
        "lm-eval tasks without a suite file (as lm_eval's flags; results under OUT/<model>/lm_eval/)"
    )
    tasks.add_argument("--tasks", help="comma-separated lm-eval tasks or groups: local (--include-path) or registry")
    tasks.add_argument("--num-fewshot", type=int, help="few-shot examples per prompt")
    tasks.add_argument("--apply-chat-template", action="store_true", help="render prompts with the chat template")
    tasks.add_argument("--gen-kwargs", help="generation settings, as lm_eval's: temperature=0,max_gen_toks=64")
    tasks.add_argument("--limit", type=int, help="first N documents per task")
    tasks.add_argument(
        "--include-path", default=TASKS_INCLUDE_PATH, help=f"local task YAMLs (default: {TASKS_INCLUDE_PATH})"
    )
    parser.add_argument("--out", type=Path, required=True, help="results folder: OUT/<model>/<suite>/")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="baseline cache (default: $QUANTGATE_CACHE/baselines or ~/.cache/quantgate/baselines)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=None, help="overrides every suite's batch_size")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    parser.add_argument(
        "--verify", action="store_true",
        help="hash every file of checkpoints without a manifest in full (default: per-file hashes cached by "
        "path, size, mtime and inode)",
    )
    endpoint = parser.add_argument_group("endpoints (backend openai: an OpenAI-compatible server, e.g. vLLM)")
    endpoint.add_argument(
        "--backend",
        default="hf",
        choices=["hf", "openai"],
        help="how each --model is measured: hf in-process; openai through --base-url (--model: its tokenizer folder)",
    )
    endpoint.add_argument(
        "--base-url", action="append", default=[], help="server URL, with or without /v1: one, or one per --model"
    )
    endpoint.add_argument(
        "--served-model-name",
        "--served-model",
        dest="served_model",
        action="append",
        default=[],
        help="served model name as vLLM's --served-model-name, one per --model (default: folder name)",
    )
    endpoint.add_argument("--api-key-env", help="environment variable holding the API key (sent as a Bearer token)")
    endpoint.add_argument(
        "--baseline-backend", default="hf", choices=["hf", "openai"], help="how --baseline is measured"
    )
    endpoint.add_argument("--baseline-base-url", help="the baseline's server URL (--baseline-backend openai)")
    endpoint.add_argument(
        "--baseline-served-model-name",
        "--baseline-served-model",
        dest="baseline_served_model",
        help="the baseline's served model name (default: folder name)",
    )
    endpoint.add_argument("--concurrency", type=int, default=8, help="requests in flight per endpoint")
    endpoint.add_argument("--max-top-k", type=int, default=64, help="log-probabilities per token the server returns")
    endpoint.add_argument(
        "--toolcall-mode",
        default="chat",
        choices=["chat", "raw"],
        help="chat: /v1/chat/completions with tools, server-side parsing; raw: /v1/completions, harness parser",
    )


def _endpoints(args: argparse.Namespace) -> list:
    from harness.backends.openai import Endpoint

    models, urls, names = args.model, args.base_url, args.served_model
    if args.backend == "hf":
        if urls or names:
            raise InputError("--base-url/--served-model-name need --backend openai")
        return []
    if len(urls) not in (1, len(models)):
        raise InputError(f"--base-url: give one, or one per --model ({len(models)}), got {len(urls)}")
    if names and len(names) != len(models):
        raise InputError(f"--served-model-name: give one per --model ({len(models)}), got {len(names)}")
    urls = urls * len(models) if len(urls) == 1 else urls
    endpoints = [
        Endpoint(url, names[i] if names else model.name, model, args.api_key_env)
        for i, (model, url) in enumerate(zip(models, urls, strict=True))
    ]
    for endpoint in endpoints:
        endpoint.api_key()  # an unset variable is an input error before anything runs
    return endpoints


def _baseline_endpoint(args: argparse.Namespace):
    from harness.backends.openai import Endpoint

    if args.baseline_backend == "hf":
        if args.baseline_base_url:
            raise InputError("--baseline-base-url needs --baseline-backend openai")
        return None
    if args.baseline is None or args.baseline_base_url is None:
        raise InputError("--baseline-backend openai needs --baseline (its tokenizer folder) and --baseline-base-url")
    name = args.baseline_served_model or args.baseline.name
    return Endpoint(args.baseline_base_url, name, args.baseline, args.api_key_env)


def tasks_suite(args: argparse.Namespace):
    """The benchmark suite `--tasks` and lm-eval's flags stand for, validated as a suite file would be."""
    from lm_eval.utils import simple_parse_args_string

    from harness.suites.loader import suite_from_fields

    given = [f for f in TASK_FLAGS if getattr(args, f) not in (None, False)]
    if args.tasks is None:
        if given or args.include_path != TASKS_INCLUDE_PATH:
            flag = (given[0] if given else "include_path").replace("_", "-")
            raise InputError(f"--{flag} needs --tasks (a suite file sets it as a field)")
        return None
    names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    if not names:
        raise InputError("--tasks: give at least one lm-eval task or group")
    fields = {
        "name": TASKS_SUITE, "kind": "benchmark", "version": 1, "tasks": names, "include_path": args.include_path,
        "limit": args.limit, "num_fewshot": args.num_fewshot, "apply_chat_template": args.apply_chat_template,
    }  # fmt: skip
    if args.gen_kwargs is not None:
        fields["gen_kwargs"] = simple_parse_args_string(args.gen_kwargs)
    return suite_from_fields(fields, "--tasks", Path.cwd())


def run_eval(args: argparse.Namespace) -> int:
    from harness.closing_table import closing_table
    from harness.evaluate import EvalRequest, evaluate
    from quantgate.core.record import read_record

    for option in ("threads", "batch_size", "concurrency", "max_top_k"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise InputError(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    if not DEVICE.fullmatch(args.device):
        raise InputError(f"--device: {args.device!r} is not a torch device (cpu, cuda, cuda:N, mps)")
    suite = tasks_suite(args)
    if not args.suite and suite is None:
        raise InputError("give --suite (a suite name or file) or --tasks (lm-eval tasks)")
    output_folder(args.out, option="--out")
    if args.cache_dir is not None:
        output_folder(args.cache_dir, option="--cache-dir")
    # measured in-process: resolved as model references; served: the tokenizer folder, as given
    in_process = args.backend == "hf"
    args.model = [resolve_reference(m, "--model") if in_process else Path(m) for m in args.model]
    if args.baseline is not None:
        in_process = args.baseline_backend == "hf"
        args.baseline = resolve_reference(args.baseline, "--baseline") if in_process else Path(args.baseline)
    endpoints, baseline_endpoint = _endpoints(args), _baseline_endpoint(args)
    request = EvalRequest(
        models=[] if endpoints else args.model,
        endpoints=endpoints,
        baseline_endpoint=baseline_endpoint,
        concurrency=args.concurrency,
        max_top_k=args.max_top_k,
        toolcall_mode=args.toolcall_mode,
        suites=args.suite + ([suite] if suite is not None else []),
        out=args.out,
        cache_dir=args.cache_dir or default_cache_dir(),
        baseline=None if baseline_endpoint else args.baseline,
        threads=args.threads,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        verify=args.verify,
    )
    records = [read_record(folder) for folder in evaluate(request)]
    print(closing_table(records, args.out))
    if args.baseline is None:  # said once it has worked, so that an input error stays one line
        print("quantgate eval: no --baseline, so nothing was compared: each model has its own metrics only",
              file=sys.stderr)  # fmt: skip
    return 0
