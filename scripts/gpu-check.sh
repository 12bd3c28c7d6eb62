#!/usr/bin/env bash
# One prepared run on a GPU machine (NVIDIA H100/H200, driver 580 / CUDA 13, PyTorch with its
# CUDA libraries in its Python environment, no network). It uses binaries built on a CPU-only
# machine by `scripts/build-gpu-bundle.sh` (release, `--features cuda`) and copied here in
# gpu-bundle/, and:
#   1. says which GPU, driver and CUDA libraries it uses;
#   2. checks GPU results equal CPU results on the CLIP parity fixtures (tolerance 1e-3 in f32);
#   3. times the CLIP ViT-B/32 image tower (random weights) in imgd (candle, CUDA, f16 and f32)
#      and in PyTorch fp16 eager on the same card, at batch 1/8/32/128;
#   4. runs imgd end to end (JPEG files -> decode -> CLIP on the GPU -> SQLite) and reports
#      images/s and the inference thread's busy fraction, with GPU utilisation from nvidia-smi;
#   5. writes a markdown table to OUT_DIR (first argument, default $OUT or ./gpu-out) and
#      prints `clip_vs_torch=X` last (imgd f16 ÷ PyTorch fp16 images/s at the largest batch).
# Budget: well under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-./gpu-out}}
BUNDLE=${BUNDLE:-gpu-bundle}
BATCHES=${BATCHES:-1,8,32,128}
E2E_IMAGES=${E2E_IMAGES:-2000}
mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/gpu-check.log
exec > >(tee "$LOG") 2>&1

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
# PyTorch's CUDA libraries (cuBLAS, cuRAND, NVRTC) are what the imgd binary loads here.
NV_LIBS=$(python3 - <<'PY'
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
dirs = set()
for root in roots:
    for lib in glob.glob(os.path.join(root, "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=$NV_LIBS:/usr/local/nvidia/lib64:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
echo "CUDA library folders: $NV_LIBS"
ldd "$BUNDLE/clip-bench" | grep -E "cuda|cublas|curand|nvrtc" || true

echo "== parity: GPU vs CPU on the CLIP fixtures"
"$BUNDLE/clip-bench" parity fixtures/clip | tee "$OUT_DIR/parity.txt"
parity_ok=${PIPESTATUS[0]}

echo "== CLIP ViT-B/32 image tower: imgd (candle)"
: > "$OUT_DIR/clip.jsonl"
for dtype in f16 f32; do
  "$BUNDLE/clip-bench" time --device cuda --dtype "$dtype" --batches "$BATCHES" | tee -a "$OUT_DIR/clip.jsonl"
done
echo "== CLIP ViT-B/32 image tower: PyTorch fp16 eager"
python3 scripts/gpu/torch_clip_bench.py "$BATCHES" | tee -a "$OUT_DIR/clip.jsonl"

echo "== end to end: $E2E_IMAGES JPEGs through imgd on the GPU"
E2E=$(mktemp -d)
python3 - "$E2E/photos" "$E2E_IMAGES" <<'PY'
import os, sys
import numpy as np
from PIL import Image
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
rng = np.random.default_rng(0)
base = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
for i in range(n):
    img = Image.fromarray(np.roll(base, i, axis=1)).resize((1024, 768), Image.BILINEAR)
    img.save(os.path.join(root, f"img{i:05d}.jpg"), quality=90)
PY
"$BUNDLE/clip-bench" make-model "$E2E/clip-model"
export IMGD_DB=$E2E/imgd.db IMGD_CLIP_MODEL=$E2E/clip-model IMGD_CUDA=1
"$BUNDLE/imgd" enqueue --json --modules embedding "$E2E/photos"
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 > "$OUT_DIR/gpu-util.txt" &
SMI=$!
"$BUNDLE/imgd" run --once --json --metrics-addr off --batch-size 128 > "$OUT_DIR/e2e.json"
kill $SMI 2>/dev/null
cat "$OUT_DIR/e2e.json"

python3 - "$OUT_DIR" "$parity_ok" <<'PY'
import json, os, sys
out, parity_ok = sys.argv[1], sys.argv[2] == "0"
rows = [json.loads(l) for l in open(os.path.join(out, "clip.jsonl")) if l.startswith("{")]
e2e = json.load(open(os.path.join(out, "e2e.json")))
util = [float(x) for x in open(os.path.join(out, "gpu-util.txt")).read().split() if x.strip()]
busy_util = sum(util) / len(util) if util else float("nan")
engines = sorted({r["engine"] for r in rows})
batches = sorted({r["batch"] for r in rows})
lines = ["| batch | " + " | ".join(engines) + " |", "|---" * (len(engines) + 1) + "|"]
for b in batches:
    cells = []
    for e in engines:
        v = [r["images_per_s"] for r in rows if r["engine"] == e and r["batch"] == b]
        cells.append(f"{v[0]:,.0f} img/s" if v else "-")
    lines.append(f"| {b} | " + " | ".join(cells) + " |")
top = max(batches)
ours = [r["images_per_s"] for r in rows if r["engine"] == "imgd-candle-cuda-f16" and r["batch"] == top]
torch = [r["images_per_s"] for r in rows if r["engine"] == "torch-fp16-eager" and r["batch"] == top]
ratio = ours[0] / torch[0] if ours and torch else float("nan")
e2e_ips = e2e["images"] / e2e["seconds"] if e2e.get("seconds") else float("nan")
busy = e2e["infer_busy_seconds"] / e2e["infer_wall_seconds"] if e2e.get("infer_wall_seconds") else float("nan")
table = "\n".join(lines)
summary = f"""## CLIP ViT-B/32 image tower (images/s)

{table}

## End to end (JPEG 1024x768 -> embedding -> SQLite)

- images: {e2e['images']}, seconds: {e2e['seconds']:.2f}, images/s: {e2e_ips:,.0f}
- inference thread busy fraction: {busy:.3f}
- mean GPU utilisation (nvidia-smi, 200 ms samples): {busy_util:.0f} %
- GPU == CPU on the parity fixtures: {'yes' if parity_ok else 'NO'}
"""
open(os.path.join(out, "gpu-table.md"), "w").write(summary)
print(summary)
print(f"e2e_images_per_s={e2e_ips:.0f}")
print(f"infer_busy_fraction={busy:.3f}")
print(f"clip_vs_torch={ratio:.2f}")
PY
