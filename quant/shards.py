"""Quantize one source shard into one output shard, tensor by tensor (runs in a worker process).

The source shard is memory-mapped (`safe_open`); each tensor is read, checked, compressed or
copied, and only the output shard's tensors are held until it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from compressed_tensors.quantization import QuantizationScheme
from safetensors import safe_open
from safetensors.torch import save_file

from quant.plan import module_of
from quant.rtn import compress_weight
from quantgate.errors import InputError

SAFETENSORS_METADATA = {"format": "pt"}


@dataclass(frozen=True)
class ShardJob:
    source: Path  # source shard file
    target: Path  # output shard file (inside the temporary directory)
    quantized: frozenset[str]  # tensor names in this shard to quantize
    scheme_json: str  # compressed-tensors QuantizationScheme (with format), serialised for the worker


@dataclass(frozen=True)
class ShardResult:
    shard: str
    tensor_names: tuple[str, ...]  # output tensor names, for the index
    source_elements: int  # elements of all source tensors
    quantized_source_elements: int  # elements of the quantized weights
    quantized_bytes: int  # bytes of every output tensor of quantized modules
    output_bytes: int  # bytes of every output tensor


def _check_finite(tensor: torch.Tensor, name: str, shard: Path) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise InputError(f"{shard}: tensor {name} contains NaN or Inf")


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def quantize_shard(job: ShardJob) -> ShardResult:
    scheme = QuantizationScheme.model_validate_json(job.scheme_json)
    output: dict[str, torch.Tensor] = {}
    source_elements = quantized_elements = quantized_bytes = 0
    with safe_open(job.source, framework="pt") as handle:
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name)
            _check_finite(tensor, name, job.source)
            source_elements += tensor.numel()
            if name not in job.quantized:
                output[name] = tensor
                continue
            module = module_of(name)
            compressed = compress_weight(tensor, scheme)
            for local_name, value in compressed.items():
                output[f"{module}.{local_name}"] = value
                quantized_bytes += _nbytes(value)
            quantized_elements += tensor.numel()
    save_file(output, job.target, metadata=SAFETENSORS_METADATA)
    return ShardResult(
        shard=job.target.name,
        tensor_names=tuple(sorted(output)),
        source_elements=source_elements,
        quantized_source_elements=quantized_elements,
        quantized_bytes=quantized_bytes,
        output_bytes=sum(_nbytes(t) for t in output.values()),
    )
