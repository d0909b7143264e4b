#!/usr/bin/env bash
# Install, fetch the test models, lint, and run the whole test suite.
#
#   bash scripts/test.sh [PYTEST ARGS]              # .venv, llama.cpp built for this CPU (CI)
#   bash scripts/test.sh --portable [PYTEST ARGS]   # .venv-portable, llama.cpp with the
#                                                   # CPU-specific paths off (docs/TESTING.md)
#   bash scripts/test.sh --vulkan -m gpu_backend    # .venv-vulkan, llama.cpp's Vulkan backend
#                                                   # on Mesa's software device: the GPU route
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
case "${1:-}" in
  --portable | --vulkan)
    VENV=.venv-${1#--}
    bash scripts/install.sh "$1"
    # llama.cpp skips Vulkan devices of the CPU type (lavapipe) unless they are named
    [ "$1" = --vulkan ] && export GGML_VK_VISIBLE_DEVICES=${GGML_VK_VISIBLE_DEVICES:-0}
    shift
    ;;
  *) bash scripts/install.sh ;;
esac
# The training tests need torch: 2.13.0 is the CPU build (pip takes it from the machine's
# wheel store here; a plain `torch` from PyPI would be a CUDA build of several GB).
# The cluster tests need Ray.
"$VENV/bin/python" -m pip install -q "torch==2.13.0" "ray==2.58.0" -e ".[train,ray]"
"$VENV/bin/visage-local" fetch qwen2.5-coder-0.5b-instruct
"$VENV/bin/visage-local" fetch gemma-3-270m
"$VENV/bin/ruff" check visage_local tests scripts
"$VENV/bin/ruff" format --check visage_local tests scripts
# The package installs cleanly: setuptools prints no warning about undeclared packages or data.
if "$VENV/bin/python" -m pip install -v --no-deps --no-build-isolation -e . 2>&1 \
    | grep -iE "_Warning|would be ignored|SetuptoolsDeprecationWarning"; then
  echo "error: pip install -e . printed setuptools warnings (above)" >&2
  exit 1
fi
# Every test runs here: a skip not listed in tests/conftest.py's ALLOWED_SKIPS fails the run.
VISAGE_NO_SKIPS=1 "$VENV/bin/python" -m pytest -q --durations=15 "$@"
