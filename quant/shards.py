"""Quantize one source shard into one output shard, streamed (runs in a worker thread).

The source shard is mapped and read front to back once (quant.stream.ShardReader); its sha256
comes from quant.prefetch, which read it ahead into the page cache. The output shard's layout
is fixed up front from shapes alone (compressed-tensors' compressors run on the meta device) and
each output tensor is written at its place as soon as it exists. Weights with a fused kernel
(quant.fast) are read and quantized a block of rows at a time; every other weight goes whole
through compressed-tensors (quant.rtn); other tensors are copied through in chunks. Memory is
bounded by the read chunk and the largest whole weight, not by the shard. Every floating tensor
is checked for NaN/Inf (fused into the min/max pass where there is one).

From a block-FP8 source (quantgate.core.fp8) the job names each FP8 weight's scale; the scales
are read first (small: one float per 128x128 block), and each FP8 weight is read in runs of
whole block rows and dequantized to BF16 exactly as DeepSeek's reference conversion does, then
quantized or written as BF16 like any BF16 weight. The scales themselves are not written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from compressed_tensors.quantization import QuantizationScheme
from safetensors import safe_open

from quant.fast import FastRTN, fast_rtn
from quant.kernels import all_finite
from quant.prefetch import SourceHasher
from quant.rtn import compress_weight
from quant.select import module_of
from quant.stream import READ_CHUNK, Entry, ShardReader, ShardWriter
from quantgate.core.errors import InputError
from quantgate.core.fp8 import dequantize_fp8, scale_name

SAFETENSORS_METADATA = {"format": "pt"}


@dataclass(frozen=True)
class ShardJob:
    source: Path  # source shard file
    target: Path  # output shard file (inside the temporary directory)
    quantized: frozenset[str]  # tensor names in this shard to quantize
    scheme_json: str | None  # compressed-tensors QuantizationScheme (with format), serialised; None: quantize nothing
    fp8_block: tuple[int, int] | None = None  # a block-FP8 source's weight_block_size
    fp8_scales: dict[str, Path] = field(default_factory=dict)  # FP8 weight in this shard -> shard of its scale
    skipped: frozenset[str] = frozenset()  # tensors of this shard not written (the FP8 scales)


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
    scheme = QuantizationScheme.model_validate_json(job.scheme_json) if job.scheme_json is not None else None
    scales = _read_scales(job)
    reader = ShardReader(job.source)
    writer = None
    try:
        entries = [e for e in reader.entries if e.name not in job.skipped]
        by_shape: dict = {}
        specs = {e.name: output_specs(_as_read(e, scales), e.name in job.quantized, scheme, by_shape) for e in entries}
        outputs = {name: t for per_entry in specs.values() for name, t in per_entry.items()}
        tensors = [(n, t.dtype, tuple(t.shape)) for n, t in outputs.items()]
        writer = ShardWriter(job.target, tensors, SAFETENSORS_METADATA)
        for entry in entries:
            weights = WeightRows(job, reader, entry, scales.get(entry.name))
            if entry.name not in job.quantized and weights.scale is None:
                _copy(job, reader, writer, entry)
            elif entry.name not in job.quantized:
                _copy_rows(writer, weights)  # an FP8 weight the scheme leaves unquantized: BF16
            elif (fast := fast_rtn(scheme, weights.dtype, entry.shape)) is not None:
                _quantize_fast(job, writer, weights, fast, specs[entry.name])
            else:
                _quantize_whole(job, writer, weights, scheme, specs[entry.name])
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
        source_elements=sum(e.nbytes // e.dtype.itemsize for e in entries),
        quantized_source_elements=sum(e.nbytes // e.dtype.itemsize for e in entries if e.name in job.quantized),
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


class WeightRows:
    """A 2-D weight read in runs of rows as the source defines it: a BF16 one as stored, an FP8 one
    dequantized with its block scales (`scale`, float32 [ceil(rows/b0), ceil(cols/b1)]) to BF16."""

    def __init__(self, job: ShardJob, reader: ShardReader, entry: Entry, scale: torch.Tensor | None) -> None:
        self.job, self.reader, self.entry, self.scale = job, reader, entry, scale
        self.dtype = entry.dtype if scale is None else torch.bfloat16
        self.row_multiple = 1 if scale is None else job.fp8_block[0]  # runs start at a block row

    def step(self, multiple: int, element_bytes: int) -> int:
        """Rows per run: about READ_CHUNK bytes of output, a multiple of `multiple` and of the block height."""
        multiple = math.lcm(multiple, self.row_multiple)
        row_bytes = self.entry.shape[1] * element_bytes
        return max(multiple, (READ_CHUNK // row_bytes) // multiple * multiple)

    def rows(self, row: int, count: int) -> torch.Tensor:
        """Rows [row, row + count) as `self.dtype` ([count, cols]); the BF16 view is valid until the next read."""
        cols = self.entry.shape[1]
        row_bytes = cols * self.entry.dtype.itemsize
        raw = self.reader.read(self.entry, row * row_bytes, count * row_bytes).view(self.entry.dtype).view(count, cols)
        if self.scale is None:
            return raw
        return dequantize_fp8(raw, self.scale, self.job.fp8_block, first_row=row).to(torch.bfloat16)


def _as_read(entry: Entry, scales: dict[str, torch.Tensor]) -> Entry:
    """The entry as its values are read: an FP8 weight is read as BF16."""
    return replace(entry, dtype=torch.bfloat16) if entry.name in scales else entry


def _read_scales(job: ShardJob) -> dict[str, torch.Tensor]:
    """The FP8 weights' block scales (float32), each checked finite."""
    scales = {}
    handles: dict[Path, object] = {}
    try:
        for weight, shard in sorted(job.fp8_scales.items()):
            if shard not in handles:
                handles[shard] = safe_open(shard, framework="pt")
            scale = handles[shard].get_tensor(scale_name(weight))
            if not bool(torch.isfinite(scale).all()):
                raise InputError(f"{shard}: tensor {scale_name(weight)} contains NaN or Inf")
            scales[weight] = scale
    finally:
        handles.clear()
    return scales


def _copy_rows(writer: ShardWriter, weights: WeightRows) -> None:
    """An FP8 weight kept unquantized: written as BF16, a run of block rows at a time."""
    rows, cols = weights.entry.shape
    step = weights.step(1, 2)
    for row in range(0, rows, step):
        block = weights.rows(row, min(step, rows - row))
        if not all_finite(block):
            raise _non_finite(weights.job, weights.entry.name)
        writer.write(weights.entry.name, block, row * cols * 2)


def _quantize_fast(
    job: ShardJob,
    writer: ShardWriter,
    weights: WeightRows,
    fast: FastRTN,
    spec: dict[str, torch.Tensor],
) -> None:
    entry = weights.entry
    rows, cols = entry.shape
    step = weights.step(fast.row_block, entry.dtype.itemsize)
    module = module_of(entry.name)
    for row in range(0, rows, step):
        count = min(step, rows - row)
        block = weights.rows(row, count)
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
    writer: ShardWriter,
    weights: WeightRows,
    scheme: QuantizationScheme,
    spec: dict[str, torch.Tensor],
) -> None:
    """compressed-tensors' own path on the whole weight (schemes and shapes without a fused kernel)."""
    entry = weights.entry
    weight = weights.rows(0, entry.shape[0]).clone()
    if not all_finite(weight):
        raise _non_finite(job, entry.name)
    module = module_of(entry.name)
    for local, value in compress_weight(weight, scheme).items():
        name = f"{module}.{local}"
        expected = spec[name]
        if value.dtype != expected.dtype or tuple(value.shape) != tuple(expected.shape):
            raise RuntimeError(f"{name}: compressed to {value.dtype} {tuple(value.shape)}, planned {expected}")
        writer.write(name, value)
