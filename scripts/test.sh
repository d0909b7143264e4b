#!/usr/bin/env bash
# Install, fetch the test models, lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The training tests need torch: 2.13.0 is the CPU build (pip takes it from the machine's
# wheel store here; a plain `torch` from PyPI would be a CUDA build of several GB).
# The cluster tests need Ray.
.venv/bin/python -m pip install -q "torch==2.13.0" "ray==2.58.0" -e ".[train,ray]"
.venv/bin/visage-local fetch qwen2.5-coder-0.5b-instruct
.venv/bin/visage-local fetch gemma-3-270m
.venv/bin/ruff check visage_local tests scripts
.venv/bin/ruff format --check visage_local tests scripts
# The package installs cleanly: setuptools prints no warning about undeclared packages or data.
if .venv/bin/python -m pip install -v --no-deps --no-build-isolation -e . 2>&1 \
    | grep -iE "_Warning|would be ignored|SetuptoolsDeprecationWarning"; then
  echo "error: pip install -e . printed setuptools warnings (above)" >&2
  exit 1
fi
# Every test runs here: a skip not listed in tests/conftest.py's ALLOWED_SKIPS fails the run.
VISAGE_NO_SKIPS=1 .venv/bin/python -m pytest -q --durations=15 "$@"
