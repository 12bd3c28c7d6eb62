#!/usr/bin/env bash
# Builds, on a CPU-only machine, what scripts/gpu-check.sh runs on a GPU machine: the CLIP GPU
# bench, the vector-search bench and the imgd daemon (release, `--features cuda`, stripped, xz-compressed to fit the
# 64 MiB that travels to the GPU machine) in gpu-bundle/. Uses the CUDA 13.0 toolkit from
# scripts/setup-cuda.sh and a separate target folder (target-cuda/) so the default build stays
# CPU-only. Cold: ~10 min of nvcc for candle's kernels on 2 cores, then cached.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup-cuda.sh)"
export LIBRARY_PATH=$CUDA_ROOT/lib64/stubs:${LIBRARY_PATH:-}
CARGO_TARGET_DIR=target-cuda cargo build --release -p imgd-clip -p imgd --example gpu_bench \
    --bin imgd --features imgd-clip/cuda,imgd/cuda
mkdir -p gpu-bundle
rm -f gpu-bundle/clip-bench* gpu-bundle/imgd* gpu-bundle/vector-bench*
cp target-cuda/release/examples/gpu_bench gpu-bundle/clip-bench
cp target-cuda/release/imgd gpu-bundle/imgd
strip gpu-bundle/clip-bench gpu-bundle/imgd
# The vector-search bench is CPU code: the GPU machine's idle cores give the 2-core figure.
cargo build --release -q -p imgd-store --example vector_search_bench
cp "${CARGO_TARGET_DIR:-target}/release/examples/vector_search_bench" gpu-bundle/vector-bench
strip gpu-bundle/vector-bench
xz -T0 -6 gpu-bundle/clip-bench gpu-bundle/imgd gpu-bundle/vector-bench
# imgd links libheif (HEIC) and its codecs, which GPU machines lack: they travel along.
rm -rf gpu-bundle/lib gpu-bundle/libs.tar.xz
mkdir -p gpu-bundle/lib
ldd target-cuda/release/imgd | awk '/=> \// {print $3}' \
    | grep -E 'lib(heif|x265|de265|dav1d|aom|numa)\.so' | xargs -I{} cp -L {} gpu-bundle/lib/
tar -C gpu-bundle -cJf gpu-bundle/libs.tar.xz lib && rm -rf gpu-bundle/lib
ls -la gpu-bundle
