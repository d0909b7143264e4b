#!/usr/bin/env bash
# The pinned llama-cpp-python source, trimmed to what a build of the library needs, in a
# git-ignored folder: DIR (default .build/llama-cpp-python) and DIR.tar.gz beside it.
#
# Used by `scripts/install.sh --portable` (a second build, CPU-specific paths off) and by
# `scripts/gpu_check.sh --prepare` (the source a GPU machine with no network builds from).
# The sdist is 76.6 MB; llama.cpp's vocabulary files, docs, tests, tools, examples and the
# backends no build here uses (Metal, SYCL, CANN, ...) are left out: about 7 MB packed.
#
#   bash scripts/llama_source.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.build/llama-cpp-python}
PIN=$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml) || {
  echo "llama_source: no llama-cpp-python pin in pyproject.toml" >&2
  exit 1
}
if [ -f "$DIR/.pin" ] && [ "$(cat "$DIR/.pin")" = "$PIN" ] && [ -f "$DIR.tar.gz" ]; then
  echo "llama_source: $DIR holds $PIN already"
  exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download -q --no-deps --no-binary :all: "$PIN" -d "$TMP" || {
  echo "llama_source: could not download the $PIN source (offline?)" >&2
  exit 1
}
tar -xzf "$TMP"/llama_cpp_python-*.tar.gz -C "$TMP"
SRC=$(echo "$TMP"/llama_cpp_python-*/)
V="$SRC/vendor/llama.cpp"
# Not built when llama.cpp is vendored (LLAMA_STANDALONE off) or with LLAVA_BUILD=OFF.
rm -rf "$SRC"/{.git,.github,docs,docker,examples,tests} "$V"/{.git,.github,.devops} "$V"/{models,docs,tests,benches,examples,pocs,tools} \
  "$V"/{media,app,ci,skills,conversion,gguf-py,requirements,scripts,grammars}
for backend in "$V"/ggml/src/ggml-*/; do
  case "$(basename "$backend")" in
    ggml-cpu | ggml-cuda | ggml-blas | ggml-vulkan) ;;
    *) rm -rf "$backend" ;;
  esac
done
rm -rf "$DIR" "$DIR.tar.gz"
mkdir -p "$(dirname "$DIR")"
mv "$SRC" "$DIR"
echo "$PIN" > "$DIR/.pin"
tar -czf "$DIR.tar.gz" -C "$(dirname "$DIR")" "$(basename "$DIR")"
echo "llama_source: $PIN in $DIR ($(du -sh "$DIR" | cut -f1)), packed $(du -h "$DIR.tar.gz" | cut -f1)"
