#!/usr/bin/env bash
# Builds llama.cpp's OpenAI-compatible `llama-server` (the `llamacpp` engine of
# `router-mesh serve-model`) from the llama.cpp sources vendored in the
# llama-cpp-python sdist on PyPI (no other source of llama.cpp is reachable here).
#
#   bash scripts/build-llama-server.sh [PREFIX]     # default PREFIX: .cache/llama-server
#
# Idempotent: skips the build when PREFIX/bin/llama-server exists and runs.
# CPU flags (LLAMA_CPU_TARGET):
#   detect (default): GGML_NATIVE=OFF, then each of AVX/AVX2/FMA/F16C/AVX512(+VNNI,+BF16)
#     switched on only when /proc/cpuinfo lists it. The native build would also enable
#     AMX, which dies with "Illegal instruction" on some VMs (seen on 2-core cloud VMs): AMX stays off.
#   x86-64-v3: AVX2/FMA/F16C only, for an image that runs on any x86-64-v3 CPU
#     (runtime/Dockerfile uses it; the builder's CPU says nothing about the nodes').
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
PREFIX=$(realpath -m "${1:-.cache/llama-server}")
JOBS=${JOBS:-$(nproc)}
BIN="$PREFIX/bin/llama-server"

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
  echo "llama-server already built: $BIN"
  exit 0
fi
for tool in cmake g++ make; do
  command -v "$tool" >/dev/null || { echo "build-llama-server: $tool is missing (apt-get install cmake g++ make)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PIP=${PIP:-python3 -m pip}
echo "fetching llama-cpp-python==$VERSION sdist (vendored llama.cpp sources)"
$PIP download --quiet --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$VERSION"
tar -xzf "$work"/llama_cpp_python-"$VERSION".tar.gz -C "$work"
src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"

TARGET=${LLAMA_CPU_TARGET:-detect}
case "$TARGET" in
  detect) has() { grep -qw "$1" /proc/cpuinfo && echo ON || echo OFF; } ;;
  x86-64-v3) has() { case "$1" in avx|avx2|fma|f16c) echo ON ;; *) echo OFF ;; esac; } ;;
  *) echo "LLAMA_CPU_TARGET must be detect or x86-64-v3, not $TARGET" >&2; exit 2 ;;
esac
flags=(
  -DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
  -DGGML_AVX="$(has avx)" -DGGML_AVX2="$(has avx2)" -DGGML_FMA="$(has fma)" -DGGML_F16C="$(has f16c)"
  -DGGML_AVX512="$(has avx512f)" -DGGML_AVX512_VNNI="$(has avx512_vnni)"
  -DGGML_AVX512_BF16="$(has avx512_bf16)" -DGGML_AVX_VNNI="$(has avx_vnni)"
)
echo "cmake flags: ${flags[*]}"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  "${flags[@]}" >"$work/cmake.log" 2>&1 || { tail -40 "$work/cmake.log" >&2; exit 1; }
start=$(date +%s)
echo "building llama-server with $JOBS jobs (several minutes on 2 cores)"
cmake --build "$work/build" --target llama-server -j "$JOBS" 2>&1 \
  | grep --line-buffered -E '^\[ *[0-9]+%\]' | awk 'NR % 20 == 1 {print; fflush()}'
test "${PIPESTATUS[0]}" = 0
mkdir -p "$PREFIX/bin"
install -m 0755 "$work/build/bin/llama-server" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "built $BIN in $(( $(date +%s) - start )) s: $("$BIN" --version 2>&1 | head -1)"
