#!/usr/bin/env bash
# Installs what SQ needs to build and test on Debian 12, and only what is
# missing: a second run installs nothing. Uses apt-get (as root, or via sudo).
set -euo pipefail

PACKAGES=(
  # build tools
  cmake ninja-build ccache python3
  # LLVM/MLIR 22: libraries, TableGen, lit/FileCheck, clang and lld
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools clang-22 lld-22
  # ONNX import: protobuf reader and the ONNX protobuf definitions
  libonnx-dev libprotobuf-dev protobuf-compiler
  # reference executor: BLAS and the SentencePiece tokenizer; tokenizer.json
  # tokenizers: PCRE2 (pre-tokenizer regexes) and ICU (NFC normalization)
  libopenblas-dev libsentencepiece-dev libpcre2-dev libicu-dev pkg-config
  # unit tests; the Python binding's test (python3-numpy); the import tests
  # that write ONNX variants or read fixtures with the onnx package
  # (gen_static_cache.py, check_dequant.py)
  libgtest-dev python3-numpy python3-onnx
  # data-parallel calibration (mpirun -np N sq-opt ...; CMake SQ_MPI=AUTO
  # finds it, SQ_MPI=OFF builds without) and its lit test
  openmpi-bin libopenmpi-dev
  # node runs onnxruntime (npm onnxruntime-node), the import tests' oracle
  nodejs
)
# npm fetches onnxruntime-node (scripts/test.sh); some node builds bundle it.
if ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(npm)
fi
# SQ_FUZZ=SECONDS scripts/test.sh: libFuzzer's runtime (libclang_rt.fuzzer)
# and the sanitizer runtimes for clang-22; scripts/test.sh --asan (SQ_ASAN=1):
# the sanitizer runtimes (only a Recommends of clang-22's packages).
if [ -n "${SQ_FUZZ:-}" ] || [ -n "${SQ_ASAN:-}" ]; then
  PACKAGES+=(libclang-rt-22-dev)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "setup: missing packages (${missing[*]}) and not root; install them or run as root" >&2
    exit 1
  fi
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
if ! $SUDO apt-get install -y -qq "${missing[@]}"; then
  echo "setup: apt-get could not install: ${missing[*]}" >&2
  echo "setup: LLVM/MLIR 22 comes from Debian 12 (bookworm, incl. bookworm-security); check /etc/apt/sources.list" >&2
  exit 1
fi
echo "setup: done"
