"""Quantize one source shard into one output shard, streamed (runs in a worker thread).

The source shard is mapped and read front to back once (quant.stream.ShardReader); its sha256
comes from quant.prefetch, which read it ahead into the page cache. The output shard's layout
is fixed up front from shapes alone (compressed-tensors' compressors run on the meta device) and
each output tensor is written at its place as soon as it exists. Weights with a fused kernel
(quant.fast) are read and quantized a block of rows at a time; every other weight goes whole
through compressed-tensors (quant.rtn); other tensors are copied through in chunks. Memory is
bounded by the read chunk and the largest whole weight, not by the shard. Every floating tensor
is checked for NaN/Inf (fused into the min/max pass where there is one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from compressed_tensors.quantization import QuantizationScheme

from quant.fast import FastRTN, fast_rtn
from quant.kernels import all_finite
from quant.prefetch import SourceHasher
from quant.rtn import compress_weight
from quant.select import module_of
from quant.stream import READ_CHUNK, Entry, ShardReader, ShardWriter
from quantgate.core.errors import InputError

SAFETENSORS_METADATA = {"format": "pt"}


@dataclass(frozen=True)
class ShardJob:
    source: Path  # source shard file
    target: Path  # output shard file (inside the temporary directory)
    quantized: frozenset[str]  # tensor names in this shard to quantize
    scheme_json: str  # compressed-tensors QuantizationScheme (with format), serialised


@dataclass(frozen=True)
class ShardResult:
    shard: str
    source_sha256: str  # of the source shard (quant.prefetch)
    sha256: str  # of the output shard
    bytes: int  # of the output shard file
    tensor_names: tuple[str, ...]  # output tensor names, for the index
    source_elements: int  # elements of all source tensors
    quantized_source_elements: int  # elements of the quantized weights
    quantized_bytes: int  # bytes of every output tensor of quantized modules
    output_bytes: int  # bytes of every output tensor


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _non_finite(job: ShardJob, name: str) -> InputError:
    return InputError(f"{job.source}: tensor {name} contains NaN or Inf")


def output_specs(
    entry: Entry, quantized: bool, scheme: QuantizationScheme, compressed_zeros: dict
) -> dict[str, torch.Tensor]:
    """Output tensors (full name -> meta tensor: dtype and shape) that one source tensor becomes.

    A quantized weight's outputs are those of compressed-tensors compressing zeros of its shape,
    once per shape (its meta-device path does not give every format's final shapes, e.g. packed
    zero points)."""
    if not quantized:
        return {entry.name: torch.empty(entry.shape, dtype=entry.dtype, device="meta")}
    module = module_of(entry.name)
    fast = fast_rtn(scheme, entry.dtype, entry.shape)
    if fast is not None:
        return {f"{module}.{local}": value for local, value in fast.specs(entry.shape).items()}
    key = (entry.dtype, entry.shape)
    if key not in compressed_zeros:
        zeros = compress_weight(torch.zeros(entry.shape, dtype=entry.dtype), scheme)
        compressed_zeros[key] = {local: v.to("meta") for local, v in zeros.items()}
    return {f"{module}.{local}": value for local, value in compressed_zeros[key].items()}


def quantize_shard(job: ShardJob, hasher: SourceHasher) -> ShardResult:
    scheme = QuantizationScheme.model_validate_json(job.scheme_json)
    reader = ShardReader(job.source)
    writer = None
    try:
        by_shape: dict = {}
        specs = {e.name: output_specs(e, e.name in job.quantized, scheme, by_shape) for e in reader.entries}
        outputs = {name: t for per_entry in specs.values() for name, t in per_entry.items()}
        tensors = [(n, t.dtype, tuple(t.shape)) for n, t in outputs.items()]
        writer = ShardWriter(job.target, tensors, SAFETENSORS_METADATA)
        for entry in reader.entries:
            if entry.name not in job.quantized:
                _copy(job, reader, writer, entry)
                continue
            fast = fast_rtn(scheme, entry.dtype, entry.shape)
            if fast is not None:
                _quantize_fast(job, reader, writer, entry, fast, specs[entry.name])
            else:
                _quantize_whole(job, reader, writer, entry, scheme, specs[entry.name])
        reader.close()
        sha = writer.close()
        source_sha = hasher.sha256(job.source)
    except BaseException:
        reader.abort()
        if writer is not None:
            writer.abort()
        raise
    quantized_outputs = [t for name in job.quantized for t in specs[name].values()]
    return ShardResult(
        shard=job.target.name,
        source_sha256=source_sha,
        sha256=sha,
        bytes=writer.size,
        tensor_names=tuple(sorted(outputs)),
        source_elements=sum(e.nbytes // e.dtype.itemsize for e in reader.entries),
        quantized_source_elements=sum(e.nbytes // e.dtype.itemsize for e in reader.entries if e.name in job.quantized),
        quantized_bytes=sum(_nbytes(t) for t in quantized_outputs),
        output_bytes=sum(_nbytes(t) for t in outputs.values()),
    )


def _copy(job: ShardJob, reader: ShardReader, writer: ShardWriter, entry: Entry) -> None:
    """A tensor kept as is: copied through in chunks of whole elements, each checked for NaN/Inf."""
    step = max(entry.dtype.itemsize, READ_CHUNK - READ_CHUNK % entry.dtype.itemsize)
    for offset in range(0, entry.nbytes, step):
        chunk = reader.read(entry, offset, min(step, entry.nbytes - offset)).view(entry.dtype)
        if not all_finite(chunk):
            raise _non_finite(job, entry.name)
        writer.write(entry.name, chunk, offset)


def _quantize_fast(
    job: ShardJob,
    reader: ShardReader,
    writer: ShardWriter,
    entry: Entry,
    fast: FastRTN,
    spec: dict[str, torch.Tensor],
) -> None:
    rows, cols = entry.shape
    row_bytes = cols * entry.dtype.itemsize
    step = max(fast.row_block, (READ_CHUNK // row_bytes) // fast.row_block * fast.row_block)
    module = module_of(entry.name)
    for row in range(0, rows, step):
        count = min(step, rows - row)
        block = reader.read(entry, row * row_bytes, count * row_bytes).view(entry.dtype).view(count, cols)
        pieces = fast.compress(block)  # local name -> tensor for these rows; None: NaN/Inf in them
        if pieces is None:
            raise _non_finite(job, entry.name)
        for local, piece in pieces.items():
            full = spec[f"{module}.{local}"]
            per_row = _nbytes(full) // full.shape[0]
            first = row if local != "weight_scale" else row // fast.row_block
            writer.write(f"{module}.{local}", piece, first * per_row)
    for local, value in fast.constants(entry.shape).items():
        writer.write(f"{module}.{local}", value)


def _quantize_whole(
    job: ShardJob,
    reader: ShardReader,
    writer: ShardWriter,
    entry: Entry,
    scheme: QuantizationScheme,
    spec: dict[str, torch.Tensor],
) -> None:
    """compressed-tensors' own path on the whole weight (schemes and shapes without a fused kernel)."""
    weight = reader.read(entry, 0, entry.nbytes).view(entry.dtype).view(entry.shape).clone()
    if not all_finite(weight):
        raise _non_finite(job, entry.name)
    module = module_of(entry.name)
    for local, value in compress_weight(weight, scheme).items():
        name = f"{module}.{local}"
        expected = spec[name]
        if value.dtype != expected.dtype or tuple(value.shape) != tuple(expected.shape):
            raise RuntimeError(f"{name}: compressed to {value.dtype} {tuple(value.shape)}, planned {expected}")
        writer.write(name, value)
