#!/usr/bin/env bash
# Install, then run a small safety-landscape sweep on the embedded default model (SmolLM2-135M).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# --preset quick: 11 points, 20 AdvBench prompts, 64 tokens; the run lists these as its
# deviations from the paper's reference setting (a plain `sweep` is the reference).
.venv/bin/visage-local sweep --preset quick --out runs/quickstart "$@"
