#!/usr/bin/env bash
# Install, fetch the test models, lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/visage-local fetch qwen2.5-coder-0.5b-instruct
.venv/bin/visage-local fetch gemma-3-270m
.venv/bin/ruff check visage_local cli tests scripts
.venv/bin/ruff format --check visage_local cli tests scripts
.venv/bin/python -m pytest -q "$@"
