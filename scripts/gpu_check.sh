#!/usr/bin/env bash
# The GPU check, sized for one short visit to a machine with an NVIDIA GPU and no network
# (an H200, 16 cores, CUDA compiler, cmake, ninja and a Python of its own): llama-cpp-python
# built there with CUDA from the source brought along, then scripts/gpu_check.py (GPU
# against CPU answers, the reload route, a sweep on both, 1B and 8B points and the 8B
# reference estimate), its figures in OUT/gpu-check.json. docs/BENCHMARKS.md says how to run
# it and what it measured.
#
#   bash scripts/gpu_check.sh --prepare   # here, with the package index: .gpu/ (the pinned
#                                         # source trimmed, ~4 MB, and the wheels the GPU
#                                         # machine's Python lacks: gguf, diskcache)
#   bash scripts/gpu_check.sh --dry-run   # checks .gpu/, the size that travels (64 MiB at
#                                         # most), and prints the plan; runs nothing
#   bash scripts/gpu_check.sh             # there, with .gpu/ brought along: build (once; kept
#                                         # in .gpu-site/), models (kept in models/), checks
#
# BUDGET_S (default 570) bounds the whole command: the checks get what the build leaves and
# skip, with the reason recorded, a step that would not fit; a second run finds the build and
# the models made and does the rest (--steps in ARGS, e.g. ARGS="--steps scale").
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BRING=.gpu
SITE=.gpu-site
OUT=${OUT:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}
BUDGET_S=${BUDGET_S:-570}
LIMIT_MIB=64
CUDA_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DLLAVA_BUILD=OFF"
WHEELS=("gguf==0.19.0" "diskcache==5.6.3")
fail() { echo "gpu_check: $*" >&2; exit 1; }
step() { echo "== $* ($(( $(date +%s) - START )) s)"; }

# What travels to the device machine: tracked files, untracked files git does not ignore,
# and the folder brought along.
travelling_bytes() {
  { git ls-files -z; git ls-files -z --others --exclude-standard; } \
    | xargs -0 -r stat -c %s 2> /dev/null | awk '{s += $1} END {print s + 0}'
}

check_bring() {
  [ -f "$BRING/llama-cpp-python.tar.gz" ] || fail "$BRING/llama-cpp-python.tar.gz is missing: run --prepare"
  for wheel in "${WHEELS[@]}"; do
    ls "$BRING"/wheels/"${wheel%%==*}"-"${wheel##*==}"-*.whl > /dev/null 2>&1 \
      || fail "$BRING/wheels has no $wheel: run --prepare"
  done
  local tree bring total
  tree=$(travelling_bytes)
  bring=$(du -sb "$BRING" | cut -f1)
  total=$(( (tree + bring) / 1048576 ))
  echo "travels: working tree $(( tree / 1048576 )) MiB + $BRING $(( bring / 1048576 )) MiB = $total MiB (limit $LIMIT_MIB)"
  [ "$total" -lt "$LIMIT_MIB" ] || fail "$total MiB would travel, over the $LIMIT_MIB MiB limit"
}

# CMake's FindCUDAToolkit looks for unversioned libraries in the toolkit's folders. Where the
# toolkit came as Python wheels (cuBLAS in nvidia/cu13/lib, say), point it at them through
# unversioned links in a folder of our own, and let llama.cpp's libraries find them at run
# time; without a driver library to link, llama.cpp's virtual memory pool is left out.
find_cuda_libraries() {
  local toolkit=/usr/local/cuda dir lib
  LIB_DIR=""
  if ! ls "$toolkit"/lib64/libcublas.so "$toolkit"/targets/*/lib/libcublas.so > /dev/null 2>&1; then
    LIB_DIR=$(python3 -c "
import glob, site
hits = [h for b in site.getsitepackages() for h in sorted(glob.glob(b + '/nvidia/*/lib/libcublas.so.*'))]
print(hits[0].rsplit('/', 1)[0] if hits else '')")
    [ -n "$LIB_DIR" ] || fail "no cuBLAS: neither in $toolkit nor in a Python nvidia wheel"
    mkdir -p /tmp/cuda-links
    for lib in cublas cublasLt; do
      ln -sf "$(ls "$LIB_DIR"/lib$lib.so.* | head -1)" /tmp/cuda-links/lib$lib.so
    done
    CUDA_ARGS="$CUDA_ARGS -DCUDA_cublas_LIBRARY=/tmp/cuda-links/libcublas.so"
    CUDA_ARGS="$CUDA_ARGS -DCUDA_cublasLt_LIBRARY=/tmp/cuda-links/libcublasLt.so"
    CUDA_ARGS="$CUDA_ARGS -DCMAKE_CUDA_FLAGS=-I$LIB_DIR/../include -DCMAKE_CXX_FLAGS=-I$LIB_DIR/../include"
    export LD_LIBRARY_PATH="$LIB_DIR:${LD_LIBRARY_PATH:-}"
  fi
  if ! ls "$toolkit"/lib64/stubs/libcuda.so "$toolkit"/targets/*/lib/stubs/libcuda.so \
    "$toolkit"/lib64/libcuda.so > /dev/null 2>&1; then
    dir=$(ldconfig -p | awk '/libcuda\.so\.1 /{print $NF; exit}')
    [ -n "$dir" ] || dir=$(ls /usr/local/nvidia/lib64/libcuda.so.1 2> /dev/null || true)
    if [ -n "$dir" ]; then
      mkdir -p /tmp/cuda-links
      ln -sf "$dir" /tmp/cuda-links/libcuda.so
      CUDA_ARGS="$CUDA_ARGS -DCUDA_cuda_driver_LIBRARY=/tmp/cuda-links/libcuda.so"
    else
      CUDA_ARGS="$CUDA_ARGS -DGGML_CUDA_NO_VMM=ON"
    fi
  fi
}

case "${1:-}" in
  --prepare)
    bash scripts/llama_source.sh
    mkdir -p "$BRING/wheels"
    cp .build/llama-cpp-python.tar.gz "$BRING/"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux2014_x86_64 -d "$BRING/wheels" "${WHEELS[@]}" \
      || fail "could not download ${WHEELS[*]} (offline?)"
    check_bring
    echo "gpu_check: $BRING is ready; bring it along (device run: carry [\"$BRING\"])"
    exit 0
    ;;
  --dry-run)
    check_bring
    cat << PLAN
plan (on the GPU machine, within BUDGET_S=$BUDGET_S s):
  1. build llama-cpp-python $(tar -xzOf "$BRING/llama-cpp-python.tar.gz" llama-cpp-python/.pin | cut -d= -f3)
     with CMAKE_ARGS="$CUDA_ARGS" into $SITE/ (once; a few minutes on 16 cores)
  2. wheels ${WHEELS[*]} into $SITE/
  3. scripts/gpu_check.py: small (GPU vs CPU logits and answers), reload (stale weights
     without it), sweep (5 points, CPU and GPU), scale (8B and 1B Q4_K_M made there, a
     GPU sweep each at 80 prompts x 128 tokens, the 8B reference-setting estimate)
     (the models' F16 sources are written while llama.cpp builds)
  4. figures: \$OUT/gpu-check.json, \$OUT/build.log, \$OUT/build.json, \$OUT/nvidia-smi.txt
PLAN
    exit 0
    ;;
  "") ;;
  *) fail "unknown option $1 (--prepare, --dry-run or nothing)" ;;
esac

command -v nvidia-smi > /dev/null || fail "no nvidia-smi: this check needs an NVIDIA GPU and its driver"
command -v nvcc > /dev/null || fail "no nvcc: llama.cpp is built with CUDA's compiler"
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" || fail "nvidia-smi failed"
PIN=$(tar -xzOf "$BRING/llama-cpp-python.tar.gz" llama-cpp-python/.pin) \
  || fail "$BRING/llama-cpp-python.tar.gz is missing or damaged: run --prepare here first"
find_cuda_libraries
echo "CMAKE_ARGS: $CUDA_ARGS"
if [ "$(cat "$SITE/.built" 2> /dev/null)" != "$PIN" ]; then
  step "building $PIN with CUDA (compute capability 9.0)"
  rm -rf "$SITE" /tmp/llama-src
  mkdir -p /tmp/llama-src "$SITE"
  tar -xzf "$BRING/llama-cpp-python.tar.gz" -C /tmp/llama-src
  python3 -m pip install -q --no-index --no-deps --target "$SITE" "$BRING"/wheels/*.whl \
    || fail "installing the wheels failed"
  # the models' F16 sources are written (one core) while llama.cpp builds (all of them)
  PYTHONPATH="$PWD/$SITE:$PWD" python3 scripts/gpu_check.py --sources-only ${ARGS:-} \
    > "$OUT/sources.log" 2>&1 &
  SOURCES=$!
  t0=$(date +%s)
  CMAKE_ARGS="$CUDA_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) python3 -m pip install \
    --no-index --no-deps --no-build-isolation --target "$SITE" /tmp/llama-src/llama-cpp-python \
    > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; fail "building $PIN with CUDA failed"; }
  echo "{\"build_s\": $(( $(date +%s) - t0 )), \"cmake_args\": \"$CUDA_ARGS\"}" > "$OUT/build.json"
  echo "$PIN" > "$SITE/.built"
  step "built; waiting for the models' sources"
  wait "$SOURCES" || { cat "$OUT/sources.log"; fail "writing the models' sources failed"; }
fi
export PYTHONPATH="$PWD/$SITE:$PWD"
python3 -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" \
  || fail "$PIN in $SITE has no GPU offload"
step "checks"
LEFT=$(( BUDGET_S - ($(date +%s) - START) ))
# shellcheck disable=SC2086  # ARGS: extra options, word-split on purpose
PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py --out "$OUT" --budget-s "$LEFT" ${ARGS:-}
step "done; figures in $OUT"
