#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and CUDA: build the pinned llama-cpp-python with CUDA in a
# temporary venv, run the scale benchmark with every layer offloaded on the generated 1B and
# 8B models, overlapped against sequential weight updates on Qwen (scripts/bench_overlap.py),
# and a short Qwen sweep on the GPU and on the CPU whose verdicts are compared.
# Everything goes to one folder (OUT, default runs/gpu-check-<time>). Unattended; every step
# stops the script with a message when it fails. The build takes minutes; making the 8B
# model (when models/synthetic/scale has none) about 20 min; the checks after that about 10.
#
#   bash scripts/gpu_check.sh            # needs nvidia-smi, nvcc and models/qwen2.5-coder-0.5b-instruct.gguf
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}
SCALE=models/synthetic/scale
QWEN=models/qwen2.5-coder-0.5b-instruct.gguf
fail() { echo "gpu_check: $*" >&2; exit 1; }
step() { echo "== $* ($(date +%T))"; }

command -v nvidia-smi > /dev/null || fail "no nvidia-smi: this check needs an NVIDIA GPU and its driver"
command -v nvcc > /dev/null || fail "no nvcc: install the CUDA toolkit (llama.cpp is built with it)"
[ -f "$QWEN" ] || fail "$QWEN is missing (models/README.md says how to assemble it)"
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" || fail "nvidia-smi failed"

step "building llama-cpp-python with CUDA in a temporary venv"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m venv "$TMP/venv" || fail "python3 -m venv failed"
PY="$TMP/venv/bin/python"
PIN=$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml) || fail "no llama-cpp-python pin in pyproject.toml"
"$PY" -m pip install -q --upgrade pip setuptools wheel
CMAKE_ARGS="-DGGML_CUDA=on -DLLAVA_BUILD=OFF" "$PY" -m pip install -q --no-cache-dir \
  --no-binary llama-cpp-python "$PIN" || fail "building $PIN with CUDA failed"
"$PY" -m pip install -q -e . || fail "installing visage-local failed"
"$PY" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" \
  || fail "$PIN was built without GPU offload"

for name in llama-3.2-1b llama-3.1-8b; do
  if [ ! -f "$SCALE/$name.Q4_K_M.gguf" ]; then
    step "making $name (random weights, real shapes)"
    "$PY" scripts/make_models.py --scale "$name" --type Q4_K_M || fail "making $name failed"
  fi
done

START=$(date +%s)
step "scale benchmark, every layer on the GPU"
"$PY" scripts/bench_scale.py "$SCALE/llama-3.2-1b.Q4_K_M.gguf" "$SCALE/llama-3.1-8b.Q4_K_M.gguf" \
  --n-gpu-layers 999 --json "$OUT/bench-gpu.json" --plot "$OUT/bench-gpu.png" \
  | tee "$OUT/bench-gpu.txt" || fail "the scale benchmark failed"

step "overlapped against sequential weight updates, every layer on the GPU"
"$PY" scripts/bench_overlap.py "$QWEN" --n-gpu-layers 999 | tee "$OUT/overlap-gpu.txt" \
  || fail "the overlap benchmark failed"
grep -q "answers identical: True" "$OUT/overlap-gpu.txt" \
  || fail "overlapped answers differ from sequential ones: $OUT/overlap-gpu.txt"

SWEEP=(sweep "$QWEN" --limit 16 --max-new-tokens 64 --steps 4 --range 0.2 --no-coherence)
for route in cpu gpu; do
  layers=0
  [ "$route" = gpu ] && layers=999
  step "Qwen sweep on the $route"
  "$PY" -m visage_local.cli "${SWEEP[@]}" --n-gpu-layers "$layers" --overwrite \
    --out "$OUT/qwen-$route" > "$OUT/qwen-$route.txt" 2>&1 || fail "the $route sweep failed: $OUT/qwen-$route.txt"
done

step "verdicts, GPU against CPU"
"$PY" - "$OUT" << 'EOF' | tee "$OUT/verdicts.txt" || fail "comparing verdicts failed"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def verdicts(route):
    lines = (out / f"qwen-{route}" / "generations.jsonl").read_text().splitlines()
    return {(r["alpha"], r["prompt_index"]): (r["refused"], r["response"]) for r in map(json.loads, lines)}

cpu, gpu = verdicts("cpu"), verdicts("gpu")
if set(cpu) != set(gpu):
    sys.exit("the two runs answered different prompts or points")
same_verdict = sum(cpu[k][0] == gpu[k][0] for k in cpu)
same_text = sum(cpu[k][1] == gpu[k][1] for k in cpu)
print(f"{len(cpu)} answers: same verdict {same_verdict} ({100 * same_verdict / len(cpu):.1f}%), "
      f"same text {same_text} ({100 * same_text / len(cpu):.1f}%)")
for alpha in sorted({a for a, _ in cpu}):
    keys = [k for k in cpu if k[0] == alpha]
    asr = lambda v: 100 * sum(not v[k][0] for k in keys) / len(keys)  # noqa: E731
    print(f"  a={alpha:+.2f}: ASR cpu {asr(cpu):5.1f}  gpu {asr(gpu):5.1f}")
EOF
echo "gpu_check: done in $(( $(date +%s) - START )) s after the build; figures in $OUT"
