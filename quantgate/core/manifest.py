"""`quantgate.json`: how a checkpoint was made, written beside its weights and read back typed.

Everyone downstream (harness, tracking, reports) reads it through `load_manifest` (a result's copy
through `ResultRecord.manifest`), never from flags or by parsing the JSON themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from quantgate.core.checkpoint import MANIFEST_NAME, sha256_file
from quantgate.core.errors import InputError
from quantgate.core.fp8 import BlockFP8
from quantgate.core.gptq import GPTQReport
from quantgate.core.strict import StrictModel

MANIFEST_VERSION = 1


class SourceIdentity(StrictModel):
    name: str  # the source directory's name (informative; identity is the hashes)
    index_sha256: str
    shard_sha256: dict[str, str]  # shard file name -> sha256


class ResolvedScheme(StrictModel):
    name: str
    scheme_version: int
    ignore: list[str]  # resolved patterns
    quantization_config: dict  # exactly as compressed-tensors serialised it into config.json


class OutputFile(StrictModel):
    sha256: str
    bytes: int


class BitsPerWeight(StrictModel):
    quantized: float  # bits stored per original weight element, over quantized modules only
    overall: float  # bits stored per original element, over every tensor of the checkpoint


class Manifest(StrictModel):
    version: Literal[1] = MANIFEST_VERSION
    quantgate_version: str
    method: Literal["rtn", "gptq"]
    source: SourceIdentity
    scheme: ResolvedScheme
    tools: dict[str, str]  # package -> version
    files: dict[str, OutputFile]  # every other file in the checkpoint directory
    total_bytes: int  # sum of `files`
    source_bytes: int  # the source's safetensors shards
    bits_per_weight: BitsPerWeight
    quantized_tensors: int
    gptq: GPTQReport | None = None  # calibration set, options, per-layer statistics (method gptq)
    source_format: BlockFP8 | None = None  # the source's format when it was not BF16 (a block-FP8 release)

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        for optional in ("gptq", "source_format"):
            if data[optional] is None:
                del data[optional]  # manifests without them stay as they were
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_manifest(directory: Path, manifest: Manifest) -> None:
    (directory / MANIFEST_NAME).write_text(manifest.to_json())


def load_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_NAME
    try:
        return Manifest.model_validate_json(path.read_bytes())  # invalid UTF-8 is a ValidationError too
    except FileNotFoundError:
        raise InputError(f"{path}: missing (not a quantgate checkpoint)") from None
    except OSError as error:
        raise InputError(f"{path}: unreadable ({error.strerror})") from None
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InputError(f"{path}: field {field!r}: {first['msg']}") from None


def check_replaceable(directory: Path, manifest: Manifest) -> None:
    """An old quantgate checkpoint may be replaced only when it holds nothing but what quantgate wrote
    (its manifest and the files it lists); anything else is the user's and is named, never deleted."""
    foreign = sorted(
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if not path.is_dir() and path.relative_to(directory).as_posix() not in {*manifest.files, MANIFEST_NAME}
    )
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise InputError(
            f"{directory}: an old quantgate checkpoint holding files quantgate did not write "
            f"({', '.join(foreign[:3])}{more}); move them away or choose another --out"
        )


def is_complete(directory: Path, manifest: Manifest) -> bool:
    """Every file the manifest lists exists with its recorded size (cheap; no hashing)."""
    return all(
        (directory / name).is_file() and (directory / name).stat().st_size == entry.bytes
        for name, entry in manifest.files.items()
    )


def verify_files(directory: Path, manifest: Manifest) -> list[str]:
    """Names of files whose sha256 differs from the manifest or that are missing (empty: all verify)."""
    bad = []
    for name, entry in sorted(manifest.files.items()):
        path = directory / name
        if not path.is_file() or sha256_file(path) != entry.sha256:
            bad.append(name)
    return bad


DEQUANTIZED_NAME = "quantgate.dequantized.json"  # beside a checkpoint quant.dequantize made


class DequantizedRecord(StrictModel):
    """What `quant.dequantize` records beside the BF16 weights it wrote from a compressed-tensors checkpoint."""

    version: Literal[1] = 1
    dequantized_from: str  # the compressed-tensors checkpoint
    config_sha256: str  # of its config.json
    note: str = "BF16 weights dequantized by compressed-tensors; latency is not the quantized kernel's"


def write_dequantized_record(directory: Path, record: DequantizedRecord) -> None:
    text = json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    (directory / DEQUANTIZED_NAME).write_text(text)


def load_dequantized_record(directory: Path) -> DequantizedRecord | None:
    """The record, or None when the checkpoint was not made by dequantizing; a bad one is an InputError."""
    path = directory / DEQUANTIZED_NAME
    if not path.is_file():
        return None
    try:
        return DequantizedRecord.model_validate_json(path.read_text())
    except ValidationError as error:
        first = error.errors()[0]
        raise InputError(f"{path}: field {'.'.join(str(p) for p in first['loc'])!r}: {first['msg']}") from None
