#!/usr/bin/env bash
# Fetches the CUDA 13.0 toolkit pieces that a `--features cuda` build needs from NVIDIA's PyPI
# wheels into .cuda/ (git-ignored) and prints the environment to build with. No GPU and no
# system CUDA install are needed. CUDA 13.0 matches driver 580; a newer nvcc's PTX would not
# load there, so the versions are pinned.
#
#   scripts/setup-cuda.sh            # fetch + unpack (idempotent), print `export ...` lines
#   eval "$(scripts/setup-cuda.sh)"  # then: cargo build --release --features cuda ...
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD/.cuda
WHEELS=$ROOT/wheels
CUDA=$ROOT/toolkit
PACKAGES=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
  nvidia-cuda-nvrtc==13.0.88
)
mkdir -p "$WHEELS" "$CUDA"
if [ ! -f "$CUDA/.complete" ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --python-version 3.11 \
    -d "$WHEELS" "${PACKAGES[@]}" >&2
  rm -rf "$CUDA"; mkdir -p "$CUDA/unpacked"
  for w in "$WHEELS"/*.whl; do python3 -m zipfile -e "$w" "$CUDA/unpacked" >&2; done
  # The wheels put each component under nvidia/cu13/{bin,include,lib,nvvm}; merge them into one
  # toolkit-shaped tree.
  mkdir -p "$CUDA/bin" "$CUDA/include" "$CUDA/lib64"
  for comp in "$CUDA"/unpacked/nvidia/*/; do
    for sub in bin include lib nvvm; do
      [ -d "$comp$sub" ] || continue
      case $sub in
        lib) cp -a "$comp$sub"/. "$CUDA/lib64/" ;;
        *) mkdir -p "$CUDA/$sub"; cp -a "$comp$sub"/. "$CUDA/$sub/" ;;
      esac
    done
  done
  chmod +x "$CUDA"/bin/* "$CUDA"/nvvm/bin/* 2>/dev/null || true
  # Unversioned names for the linker (libcublas.so -> libcublas.so.13, ...).
  for lib in "$CUDA"/lib64/lib*.so.*; do
    base=${lib%%.so.*}.so
    [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
  done
  # libcuda.so comes only with the driver. candle links the driver API dynamically, so the build
  # links against a stub that has the driver's symbols and soname (libcuda.so.1); at run time
  # the real driver library is loaded in its place.
  cudarc=$(find "${CARGO_HOME:-$HOME/.cargo}"/registry/src -maxdepth 2 -type d -name 'cudarc-*' | sort -V | tail -1)
  if [ -z "$cudarc" ]; then
    cargo fetch -q >&2 || true
    cudarc=$(find "${CARGO_HOME:-$HOME/.cargo}"/registry/src -maxdepth 2 -type d -name 'cudarc-*' | sort -V | tail -1)
  fi
  mkdir -p "$CUDA/lib64/stubs"
  grep -ohE "fn (cu[A-Za-z0-9_]+)\(" "$cudarc"/src/driver/sys/*.rs | sed -E 's/fn (.*)\(/\1/' | sort -u \
    | awk '{ print "int " $1 "(void) { return 999; }" }' > "$CUDA/lib64/stubs/cuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib64/stubs/libcuda.so" "$CUDA/lib64/stubs/cuda_stub.c"
  touch "$CUDA/.complete"
fi
"$CUDA/bin/nvcc" --version >&2
cat <<ENV
export CUDA_ROOT=$CUDA CUDA_PATH=$CUDA CUDA_HOME=$CUDA
export PATH=$CUDA/bin:\$PATH
export LIBRARY_PATH=$CUDA/lib64:\${LIBRARY_PATH:-}
export CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13000
ENV
