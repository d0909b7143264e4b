#!/usr/bin/env bash
# How reproducible a landscape is across llama.cpp builds: the same Qwen sweep (80 AdvBench
# prompts, 64 new tokens, a = -0.2 .. +0.2 in steps of 0.1, around the reference landscape's
# basin edges -0.18 / +0.10) run by the native build (.venv) and by the portable one
# (.venv-portable: GGML_NATIVE off, AVX2 at most; `bash scripts/install.sh --portable`), then
# the verdicts that differ at each point and the ASR and VISAGE of each. docs/NOTES.md has the
# figures. About 10 minutes a build on 2 cores.
#
#   bash scripts/cross_build.sh [OUT]        # default runs/cross-build
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/cross-build}
for venv in .venv .venv-portable; do
  [ -x "$venv/bin/visage-local" ] || {
    echo "cross_build: $venv is missing (bash scripts/install.sh, and --portable)" >&2
    exit 1
  }
done
.venv/bin/visage-local fetch qwen2.5-coder-0.5b-instruct > /dev/null
for build in native portable; do
  venv=.venv
  [ "$build" = portable ] && venv=.venv-portable
  "$venv/bin/visage-local" sweep qwen2.5-coder-0.5b-instruct --limit 80 --max-new-tokens 64 \
    --steps 4 --range 0.2 --no-coherence --threads 2 --out "$OUT/$build"
done
.venv/bin/python - "$OUT" << 'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
runs = {}
for build in ("native", "portable"):
    folder = out / build
    lines = (folder / "generations.jsonl").read_text().splitlines()
    runs[build] = {
        "summary": json.loads((folder / "summary.json").read_text()),
        "answers": {(r["alpha"], r["prompt_index"]): r for r in map(json.loads, lines)},
    }
native, portable = runs["native"], runs["portable"]
for build, run in runs.items():
    print(f"{build}: {run['summary']['versions']['llama.cpp build']}")
print("alpha   verdicts differ  answers differ  ASR native  ASR portable")
for alpha in sorted({a for a, _ in native["answers"]}):
    keys = [k for k in native["answers"] if k[0] == alpha]
    a, b = native["answers"], portable["answers"]
    verdicts = sum(a[k]["refused"] != b[k]["refused"] for k in keys)
    texts = sum(a[k]["response"] != b[k]["response"] for k in keys)
    asr = [100 * sum(not run[k]["refused"] for k in keys) / len(keys) for run in (a, b)]
    print(f"{alpha:+.2f}   {verdicts:2d} of {len(keys)}         {texts:2d} of {len(keys)}"
          f"        {asr[0]:5.1f}       {asr[1]:5.1f}")
for name in ("visage", "origin_asr", "basin_edges"):
    print(f"{name}: native {native['summary'][name]}  portable {portable['summary'][name]}")
EOF
