"""The peer run of bench/quantize_throughput.py: llm-compressor's `model_free_ptq` on a checkpoint.

Runs inside the llm-compressor venv (bench/setup_llmcompressor_venv.sh), never in quantgate's:
it imports only llm-compressor, its compressed-tensors and the standard library. The scheme comes
as JSON (a compressed-tensors QuantizationScheme and an ignore list) written by the benchmark
from quantgate's own scheme, so both tools quantize with the same arguments. On CPU, with
`max_workers` threads (llm-compressor's only parallelism).

Prints one JSON line: versions, import and quantize seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib.metadata import version
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="llm-compressor model_free_ptq, for the benchmark")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--spec", type=Path, required=True, help='JSON: {"scheme": {...}, "ignore": [...]}')
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    from compressed_tensors.quantization import QuantizationScheme
    from llmcompressor import model_free_ptq

    imported = time.perf_counter()
    spec = json.loads(args.spec.read_text())
    model_free_ptq(
        str(args.model),
        str(args.out),
        scheme=QuantizationScheme.model_validate(spec["scheme"]),
        ignore=spec["ignore"],
        max_workers=args.workers,
        device="cpu",
    )
    done = time.perf_counter()
    versions = {
        name: version(name) for name in ("llmcompressor", "compressed-tensors", "torch", "transformers")
    }
    print(json.dumps({"versions": versions, "import_s": imported - start, "quantize_s": done - imported}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
