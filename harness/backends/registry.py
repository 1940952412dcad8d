"""The backends `quantgate eval` can open: the single place they are registered.

hf      in-process transformers (a checkpoint folder)
openai  an OpenAI-compatible endpoint (base URL + served model name + API key's env var), with the
        served checkpoint's tokenizer folder for token handling
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends.base import Backend


@dataclass(frozen=True)
class BackendOptions:
    """Settings for opening any backend; each backend reads its own."""

    dtype: str = "float32"  # hf
    device: str = "cpu"  # hf
    device_map: str | None = None  # hf: "auto" spreads the model over every visible GPU (accelerate)
    threads: int | None = None  # hf
    batch_size: int = 8  # hf
    concurrency: int = 8  # openai: requests in flight
    timeout: float = 300.0  # openai: per request, seconds
    max_top_k: int = 64  # openai: log-probabilities the server returns per token (vLLM --max-logprobs)
    toolcall_mode: str = "chat"  # openai: chat (server-side parsing) or raw (harness parser)
    journal: Path | None = None  # openai: request journal (rerun repeats only failed requests)


def _open_hf(target: Any, options: BackendOptions) -> Backend:
    from harness.backends.hf import HFBackend

    return HFBackend(
        target, dtype=options.dtype, device=options.device, threads=options.threads, batch_size=options.batch_size,
        device_map=options.device_map,
    )


def _open_openai(target: Any, options: BackendOptions) -> Backend:
    from harness.backends.openai import OpenAIBackend

    return OpenAIBackend(
        target,
        concurrency=options.concurrency,
        timeout=options.timeout,
        journal=options.journal,
        max_top_k=options.max_top_k,
        toolcall_mode=options.toolcall_mode,
    )


BACKENDS: dict[str, Callable[[Any, BackendOptions], Backend]] = {"hf": _open_hf, "openai": _open_openai}


def open_backend(name: str, target: Any, options: BackendOptions) -> Backend:
    """target: a checkpoint Path (hf) or an Endpoint (openai)."""
    if name not in BACKENDS:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](target, options)


def numerical_settings(name: str, options: BackendOptions) -> dict:
    """What a baseline cache key needs before the backend is opened (the fields its describe() gives)."""
    if name == "hf":
        import torch

        return {
            "backend": "hf",
            "device": options.device,
            "dtype": options.dtype,
            "threads": options.threads or torch.get_num_threads(),
        }
    return {"backend": name, "device": "endpoint", "dtype": "server", "threads": None}
