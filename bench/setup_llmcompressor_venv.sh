#!/usr/bin/env bash
# The peer for bench/quantize_throughput.py: llm-compressor in a venv of its own.
#
# llm-compressor pins older transformers (<= 5.17) and compressed-tensors (== 0.19.0) than
# quantgate (transformers 5.24, compressed-tensors 0.20.1), so it never shares quantgate's
# environment and is never a project dependency. llmcompressor 0.14.0.1 is the newest release
# whose torch range (>= 2.10, <= 2.14.0) admits torch 2.13.0, the CPU wheel on local disk,
# which is installed first so that pip never pulls a CUDA build.
#
# Idempotent: a venv that already imports the pinned llm-compressor is kept as it is.
# Usage: bench/setup_llmcompressor_venv.sh [VENV_DIR]   (default: .bench-venvs/llmcompressor)
set -euo pipefail

LLMCOMPRESSOR_VERSION=0.14.0.1
TORCH_VERSION=2.13.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.bench-venvs/llmcompressor}"
PYTHON="${PYTHON:-python3}"

works() {
    [ -x "$1/bin/python" ] && "$1/bin/python" - "$LLMCOMPRESSOR_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version

from llmcompressor import model_free_ptq  # noqa: F401

sys.exit(0 if version("llmcompressor") == sys.argv[1] else 1)
EOF
}

if works "$VENV"; then
    echo "llm-compressor $LLMCOMPRESSOR_VERSION venv ready: $VENV"
    exit 0
fi

# A half-built venv fails the check above and is rebuilt from scratch on the next run.
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
trap 'rm -rf "$VENV"' ERR
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip install --quiet "llmcompressor==$LLMCOMPRESSOR_VERSION" "torch==$TORCH_VERSION"
trap - ERR
works "$VENV" || { echo "llm-compressor venv at $VENV does not import model_free_ptq" >&2; exit 1; }
"$VENV/bin/python" -m pip list 2>/dev/null | grep -Ei '^(llmcompressor|compressed-tensors|transformers|torch) '
echo "llm-compressor $LLMCOMPRESSOR_VERSION venv ready: $VENV"
