#!/usr/bin/env bash
# Install, then run a small safety-landscape sweep on the embedded default model (SmolLM2-135M).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/visage-local sweep --steps 10 --limit 20 --max-new-tokens 48 --out runs/quickstart "$@"
