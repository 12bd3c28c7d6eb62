#!/usr/bin/env bash
# CLIP ViT-B/32's image tower on the CPU: imgd (candle, f32) against ONNX Runtime 1.31.1's CPU
# provider on an ONNX export of the same tower with the same weights, THREADS threads each
# (default 2), one batch size (default 8). The first run writes a random-weight CLIPModel of
# openai/clip-vit-base-patch32's real size and its image tower's export into
# .cache/bench-models/clip-vit-b32/ (`make-fixtures.py bench-models`, the folder the
# all-modules benchmark uses; torch, transformers, onnx and onnxruntime in .venv-fixtures).
# Prints each engine's ms per image: candle, imgd's ONNX Runtime engine (the export in the
# model folder, from cropped bytes as the embedding module runs it on the CPU) and ONNX Runtime
# called directly; then clip_cpu_candle_vs_ort=X and, last, clip_cpu_vs_ort=X (imgd's
# images/s on the CPU, its ONNX engine, ÷ ONNX Runtime's).
#
#   scripts/bench-clip-cpu.sh
#   THREADS=2 BATCH=8 SECS=10 scripts/bench-clip-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
BATCH="${BATCH:-8}"
SECS="${SECS:-10}"
MODEL="$PWD/.cache/bench-models/clip-vit-b32"
PY=.venv-fixtures/bin/python

if [ ! -x "$PY" ]; then
  echo "run scripts/make-fixtures.py first: it creates .venv-fixtures/" >&2
  exit 1
fi
if ! "$PY" -c "import onnx, onnxruntime" 2>/dev/null; then
  "$PY" -m pip install -q --disable-pip-version-check onnx "onnxruntime==1.31.1"
fi

# openai/clip-vit-base-patch32's shape with random weights, and its image tower's export.
"$PY" scripts/make-fixtures.py bench-models "$(dirname "$MODEL")" clip-vit-b32

imgd_out=$(RAYON_NUM_THREADS="$THREADS" cargo bench -q -p imgd-clip --bench clip -- \
  "$BATCH" --model "$MODEL" --tower-only --secs "$SECS" 2>/dev/null)
echo "$imgd_out"
candle_ms=$(echo "$imgd_out" | awk '/^clip_image_ms_per_image/ {print $2}' | tail -1)
# The folder's export: what the embedding module runs on the CPU.
onnx_out=$(cargo bench -q -p imgd-clip --bench clip -- \
  "$BATCH" --model "$MODEL" --tower-only --secs "$SECS" --onnx "$THREADS" 2>/dev/null)
echo "$onnx_out"
imgd_ms=$(echo "$onnx_out" | awk '/^clip_onnx_image_ms_per_image/ {print $2}' | tail -1)

ort_ms=$("$PY" - "$MODEL/onnx/vision_model.onnx" "$THREADS" "$BATCH" "$SECS" <<'PY'
import sys
import time

import numpy as np
import onnxruntime as ort

path, threads, batch, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
pixels = np.random.RandomState(0).randn(batch, 3, 224, 224).astype(np.float32)
session.run(None, {"pixel_values": pixels})
runs, started = 0, time.perf_counter()
while runs < 2 or time.perf_counter() - started < secs:
    session.run(None, {"pixel_values": pixels})
    runs += 1
print(f"{1000 * (time.perf_counter() - started) / runs / batch:.2f}")
PY
)
echo "ort_image_ms_per_image{model=\"clip-vit-b32\",threads=\"$THREADS\",batch=\"$BATCH\"} $ort_ms"
awk -v candle="$candle_ms" -v ort="$ort_ms" 'BEGIN { printf "clip_cpu_candle_vs_ort=%.2f\n", ort / candle }'
awk -v imgd="$imgd_ms" -v ort="$ort_ms" 'BEGIN { printf "clip_cpu_vs_ort=%.2f\n", ort / imgd }'
