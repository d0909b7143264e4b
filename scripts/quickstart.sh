#!/usr/bin/env bash
# Install, fetch Qwen2.5-Coder-0.5B-Instruct (an aligned model: it has a safety basin) and run
# a small safety-landscape sweep on it; the run ends with its verdict line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/visage-local fetch qwen2.5-coder-0.5b-instruct  # about 500 MB, once
# --preset quick: 11 points, 20 AdvBench prompts, 64 tokens; the run lists these as its
# deviations from the paper's reference setting (a plain `sweep` is the reference).
.venv/bin/visage-local sweep qwen2.5-coder-0.5b-instruct --preset quick --out runs/quickstart "$@"
