#!/usr/bin/env bash
# One prepared run on a GPU machine (NVIDIA H100/H200, driver 580 / CUDA 13, PyTorch with its
# CUDA libraries in its Python environment, no network). It uses the binary that
# `scripts/build-gpu-bundle.sh` builds on a CPU-only machine (release, `--features cuda`) into
# gpu-bundle/, and:
#   1. says which GPU, driver and CUDA libraries it uses;
#   2. checks GPU results equal CPU results for the CLIP image tower (f32, relative error < 1e-3);
#   3. times the CLIP ViT-B/32 image tower (random weights, the forward the embedding runner
#      runs) in imgd (candle, CUDA, f16 and f32) and in PyTorch fp16 eager on the same card, at
#      batch 1/8/32/128, and PyTorch fp16 through torch.compile at batch 128, sampling GPU
#      utilisation with nvidia-smi while imgd runs;
#   4. runs `imgd run --once` on the GPU over a corpus of JPEG copies with the same ViT-B/32
#      architecture (random weights written by `clip-bench write-model`) and reports end-to-end
#      images/s and the inference thread's busy fraction;
#   5. runs `imgd run --once` with the ONNX Runtime modules (ocr: PP-OCRv6, faces: MTCNN) over
#      a few hundred JPEG copies, on the CPU and on ONNX Runtime's CUDA execution provider
#      (the onnxruntime-gpu libraries of ort-gpu.tar.xz, or $ORT_GPU_LIB, or an onnxruntime-gpu
#      installed in this Python), and checks the two agree (scripts/gpu/ort_e2e.sh): prints
#      `ort_cpu_ocr_faces_ips=`, `ort_cuda_ocr_faces_ips=`, `ort_cuda_parity=ok|...`;
#   6. runs the BLIP-2 benchmark (OPT-2.7b, then Flan-T5-XL in bf16, at real size, random
#      weights, f16 with the Q-Former in f32): encode ms per image, decoder ms per token at
#      batch 1 and 8, and a caption plus four questions with the image encoded once against
#      once per prompt;
#   7. times exact top-10 vector search over 1 M x 512-d vectors on two pinned idle cores
#      (CPU code; the build machine's cores are too loaded for the figure);
#   8. writes a markdown table to OUT_DIR (first argument, default $OUT or ./gpu-out) and
#      prints the figures last: `clip_vs_torch=X` (imgd f16 ÷ PyTorch fp16 eager images/s at
#      the largest batch), `clip_vs_torch_compile=X`, `e2e_clip_ips=X`,
#      `ort_cuda_ocr_faces_ips=X`, `blip2_cached_vs_reencode=X`.
# Each step runs when its bundle files travelled and fails soft: the 64 MiB a call carries
# holds either the CLIP set (clip-bench, imgd, blip2-bench, libs; vector-bench when asked) or
# the ONNX Runtime set (imgd, libs, ort-gpu, ort-models); see scripts/build-gpu-bundle.sh. At
# most 8 files in OUT_DIR. Budget: about 3 minutes per set.
# Environment: BATCHES (1,8,32,128), E2E_COPIES (1000 copies of four photos), COMPILE_TIMEOUT
# (180 s), ORT_STEP=0 / CAPTION_STEP=0 / FLAN_T5_STEP=0 / VECTOR_BENCH=0 to skip those steps,
# ALL_MODULES_STEP=1 to run scripts/bench-all-modules.sh (with the ONNX Runtime set;
# ALL_MODULES_IMAGES, 400, ALL_MODULES_TIMEOUT, 420 s), ORT_STEP_TIMEOUT
# (240 s), BLIP2_TIMEOUT (240 s), ORT_GPU_LIB, ORT_MODELS. The run of 2026-12-04 (benches/GPU.md):
#   E2E_COPIES=1000 COMPILE_TIMEOUT=150 ORT_STEP=0 VECTOR_BENCH=0 scripts/gpu-check.sh "$OUT"
#   CAPTION_STEP=0 VECTOR_BENCH=0 scripts/gpu-check.sh "$OUT"        (the ONNX Runtime set)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-./gpu-out}}
BUNDLE=${BUNDLE:-gpu-bundle}
BATCHES=${BATCHES:-1,8,32,128}
mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/gpu-check.log
exec > >(tee "$LOG") 2>&1

# The bundle travels xz-compressed.
for tool in clip-bench imgd vector-bench blip2-bench; do
    if [ -f "$BUNDLE/$tool.xz" ] && [ ! -x "/tmp/imgd-bundle/$tool" ]; then
        mkdir -p /tmp/imgd-bundle
        xz -dc "$BUNDLE/$tool.xz" > "/tmp/imgd-bundle/$tool" && chmod +x "/tmp/imgd-bundle/$tool"
    fi
done
# The libraries imgd links that such a machine lacks (libheif and its codecs), ONNX Runtime
# for the GPU (ort/) and the OCR and face models (ort-models/).
for archive in libs ort-gpu ort-models; do
    if [ -f "$BUNDLE/$archive.tar.xz" ]; then
        mkdir -p /tmp/imgd-bundle
        tar -C /tmp/imgd-bundle -xJf "$BUNDLE/$archive.tar.xz" || echo "cannot unpack $archive.tar.xz"
    fi
done
if [ -x /tmp/imgd-bundle/clip-bench ] || [ -x /tmp/imgd-bundle/imgd ] || [ -x /tmp/imgd-bundle/blip2-bench ]; then
    BUNDLE=/tmp/imgd-bundle
fi
SCRATCH=$(mktemp -d)

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
export LD_LIBRARY_PATH=$NV_LIBS:/usr/local/nvidia/lib64:/usr/local/cuda/lib64:/tmp/imgd-bundle/lib:${LD_LIBRARY_PATH:-}
echo "CUDA library folders: $NV_LIBS"
: > "$OUT_DIR/clip.jsonl"
parity_ok=1
if [ ! -x "$BUNDLE/clip-bench" ]; then
    echo "== CLIP steps skipped: no clip-bench in $BUNDLE (the ONNX Runtime set travelled)"
else
ldd "$BUNDLE/clip-bench" | grep -E "cuda|cublas|curand|nvrtc" || true

echo "== parity: GPU vs CPU on the CLIP fixtures"
"$BUNDLE/clip-bench" parity | tee "$OUT_DIR/parity.txt"
parity_ok=${PIPESTATUS[0]}

echo "== CLIP ViT-B/32 image tower: imgd (candle)"
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 100 > "$SCRATCH/gpu-util.txt" &
SMI=$!
"$BUNDLE/clip-bench" time --device cuda --dtype f16 --batches "$BATCHES" | tee -a "$OUT_DIR/clip.jsonl"
kill $SMI 2>/dev/null
"$BUNDLE/clip-bench" time --device cuda --dtype f32 --batches "$BATCHES" | tee -a "$OUT_DIR/clip.jsonl"
echo "== CLIP ViT-B/32 image tower: PyTorch fp16 eager"
python3 scripts/gpu/torch_clip_bench.py "$BATCHES" | tee -a "$OUT_DIR/clip.jsonl"
echo "== CLIP ViT-B/32 image tower: PyTorch fp16 torch.compile (batch 128; compile time not timed)"
timeout "${COMPILE_TIMEOUT:-180}" python3 scripts/gpu/torch_clip_bench.py 128 --compile 2>"$SCRATCH/compile.err" \
    | tee -a "$OUT_DIR/clip.jsonl" || tail -5 "$SCRATCH/compile.err"

echo "== end to end: imgd run --once, CLIP ViT-B/32 (random weights) on the GPU, JPEG files"
E2E=$(mktemp -d)
"$BUNDLE/clip-bench" write-model "$E2E/models/vit-b32"
mkdir -p "$E2E/photos"
COPIES=${E2E_COPIES:-1000}
for i in $(seq 1 "$COPIES"); do
    for f in fixtures/ocr/text_00.jpg fixtures/faces/bus.jpg fixtures/faces/astronaut.jpg fixtures/photos/flower.jpg; do
        cp "$f" "$E2E/photos/$i-$(basename "$f")"
    done
done
printf '%s\n' "[daemon]" "claim_batch = 512" "[models]" "dir = \"$E2E/models\"" \
    'embedding = "vit-b32"' "cuda = true" 'disabled = ["ocr", "faces", "aesthetic", "cloud"]' \
    "[batch.embedding]" "max_items = 128" "max_wait_ms = 20" > "$E2E/imgd.toml"
export IMGD_DB=$E2E/imgd.db
"$BUNDLE/imgd" enqueue --modules embedding "$E2E/photos"
IMGD_LOG=info "$BUNDLE/imgd" run --once --json --metrics-addr off --config "$E2E/imgd.toml" \
    > "$OUT_DIR/e2e.json" 2> "$OUT_DIR/e2e.log"
grep -iE "cuda|embedding" "$OUT_DIR/e2e.log" | head -5
cat "$OUT_DIR/e2e.json"
"$BUNDLE/imgd" status | sed -n 1,12p
fi  # CLIP steps

echo "== ONNX Runtime on the GPU: imgd run --once, ocr + faces, CPU vs CUDA execution provider"
# The library: $ORT_GPU_LIB, else the bundle's (ort-gpu.tar.xz), else an onnxruntime-gpu
# installed in this Python. The models: the bundle's (ort-models.tar.xz), else the registry's.
ORT_LIB=${ORT_GPU_LIB:-$(ls "$BUNDLE"/ort/libonnxruntime.so.1.* 2>/dev/null | head -1)}
if [ -z "$ORT_LIB" ]; then
    ORT_LIB=$(python3 -c 'import glob, os, onnxruntime as o; print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), "capi", "libonnxruntime.so.1*")))[-1])' 2>/dev/null)
fi
ORT_MODELS=${ORT_MODELS:-$BUNDLE/ort-models}
[ -d "$ORT_MODELS/rapidocr" ] || ORT_MODELS=models/registry
if [ "${ORT_STEP:-1}" != 1 ]; then
    echo "ort step skipped: ORT_STEP=${ORT_STEP}" | tee "$OUT_DIR/ort.txt"
elif [ ! -x "$BUNDLE/imgd" ]; then
    echo "ort step skipped: no imgd binary in $BUNDLE" | tee "$OUT_DIR/ort.txt"
elif [ -z "$ORT_LIB" ]; then
    echo "ort step skipped: no onnxruntime-gpu library (ort-gpu.tar.xz, ORT_GPU_LIB or pip)" | tee "$OUT_DIR/ort.txt"
elif [ ! -f "$ORT_MODELS/rapidocr/PP-OCRv6_rec_small.onnx" ] || [ ! -f "$ORT_MODELS/mtcnn/onet.onnx" ]; then
    echo "ort step skipped: no OCR/MTCNN models (ort-models.tar.xz or models/registry)" | tee "$OUT_DIR/ort.txt"
else
    timeout "${ORT_STEP_TIMEOUT:-240}" scripts/gpu/ort_e2e.sh "$BUNDLE/imgd" "$ORT_LIB" "$ORT_MODELS" 2>&1 \
        | tee "$OUT_DIR/ort.txt"
fi

echo "== BLIP-2 (OPT-2.7b, then Flan-T5-XL in bf16; random weights) on the GPU, f16, the Q-Former in f32"
if [ -x "$BUNDLE/blip2-bench" ]; then
    timeout "${BLIP2_TIMEOUT:-240}" "$BUNDLE/blip2-bench" --cuda --dtype f16 2>&1 | tee "$OUT_DIR/blip2.txt"
    if [ "${FLAN_T5_STEP:-1}" = 1 ]; then
        timeout "${BLIP2_TIMEOUT:-240}" "$BUNDLE/blip2-bench" --cuda --dtype f16 --lm flan-t5-xl 2>&1 \
            | tee -a "$OUT_DIR/blip2.txt"
    fi
else
    echo "BLIP-2 step skipped: no blip2-bench in $BUNDLE"
fi
if [ -x "$BUNDLE/imgd" ] && [ "${CAPTION_STEP:-1}" = 1 ]; then
    echo "== the caption module with BLIP-2 on the GPU (tiny fixture, f16, Q-Former f32)"
    CAP=$(mktemp -d)
    mkdir -p "$CAP/models" "$CAP/photos"
    cp -r fixtures/blip2/tiny-blip2-opt "$CAP/models/blip2"
    cp fixtures/blip/images/* fixtures/photos/flower.jpg "$CAP/photos/"
    printf '%s\n' "[models]" "dir = \"$CAP/models\"" 'caption = "blip2"' "cuda = true" \
        '[[caption.questions]]' 'name = "subject"' 'question = "What is in the picture?"' \
        > "$CAP/imgd.toml"
    IMGD_DB=$CAP/imgd.db "$BUNDLE/imgd" enqueue --modules caption "$CAP/photos" > /dev/null
    IMGD_DB=$CAP/imgd.db IMGD_LOG=info "$BUNDLE/imgd" run --once --json --metrics-addr off \
        --config "$CAP/imgd.toml" 2> "$CAP/log" | tee "$OUT_DIR/blip2-module.json"
    grep -iE "caption|cuda|error" "$CAP/log" | head -5
    echo "blip2_module_caption_rows=$(IMGD_DB=$CAP/imgd.db "$BUNDLE/imgd" show --json "$CAP/photos/flower.jpg" \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print("ok" if isinstance(d.get("caption", {}).get("caption"), str) else d)')" \
        | tee -a "$OUT_DIR/blip2.txt"
fi

if [ "${ALL_MODULES_STEP:-0}" = 1 ] && [ -x "$BUNDLE/imgd" ]; then
    echo "== every local module end to end on the GPU (scripts/bench-all-modules.sh)"
    # The models are made here with this machine's torch (real size, random weights); PP-OCR,
    # MTCNN and ONNX Runtime come from the ONNX Runtime set.
    FIXTURES_PYTHON=here PYTHON=python3 IMGD=$BUNDLE/imgd BENCH_MODELS=/tmp/imgd-bench-models \
        IMGD_REGISTRY_MODELS=$ORT_MODELS ORT_LIB=$ORT_LIB \
        timeout "${ALL_MODULES_TIMEOUT:-420}" scripts/bench-all-modules.sh \
        "${ALL_MODULES_IMAGES:-400}" --cuda 2>&1 | tee "$OUT_DIR/all-modules.txt"
fi

echo "== vector search, 1 M x 512-d, on 2 pinned idle cores (CPU code; the GPU is not used)"
if [ -x "$BUNDLE/vector-bench" ] && [ "${VECTOR_BENCH:-1}" = 1 ]; then
    VDIR=$(mktemp -d)
    taskset -c 2,3 "$BUNDLE/vector-bench" "$VDIR/vectors.db" 1000000 512 25 | tee "$OUT_DIR/vector.txt"
    rm -rf "$VDIR"
fi

python3 - "$OUT_DIR" "$parity_ok" "$SCRATCH" <<'PY'
import json, os, sys
out, parity_ok, scratch = sys.argv[1], sys.argv[2] == "0", sys.argv[3]
def read(name, folder=out):
    try:
        return open(os.path.join(folder, name)).read()
    except OSError:
        return ""
rows = [json.loads(l) for l in read("clip.jsonl").splitlines() if l.startswith("{")]
util = [float(x) for x in read("gpu-util.txt", scratch).split() if x.strip()]
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
ratio = compile_ratio = float("nan")
if rows:
    top = max(batches)
    ours = [r["images_per_s"] for r in rows if r["engine"] == "imgd-candle-cuda-f16" and r["batch"] == top]
    torch = [r["images_per_s"] for r in rows if r["engine"] == "torch-fp16-eager" and r["batch"] == top]
    ratio = ours[0] / torch[0] if ours and torch else float("nan")
    compiled = [r["images_per_s"] for r in rows if r["engine"] == "torch-fp16-compile" and r["batch"] == top]
    compile_ratio = ours[0] / compiled[0] if ours and compiled else float("nan")
e2e_ips = float("nan")
try:
    e2e = json.load(open(os.path.join(out, "e2e.json")))
    busy = e2e["infer_busy_seconds"] / max(e2e["infer_wall_seconds"], 1e-9)
    e2e_ips = e2e["images"] / e2e["seconds"]
    e2e_line = (f"- end to end (`imgd run --once`, {e2e['images']} JPEGs of 0.2-0.9 MP, CLIP "
                f"ViT-B/32 f16 on the GPU, batch 128): {e2e['images'] / e2e['seconds']:,.0f} "
                f"images/s, inference thread busy {busy:.0%}, {e2e['jobs_failed']} failed")
    if e2e.get("batches"):
        e2e_line += (f"; {e2e['batches']} batches of {e2e['batched_items'] / e2e['batches']:.1f} "
                     f"on average, {e2e['model_seconds']:.2f} s of {e2e['infer_busy_seconds']:.2f} s "
                     f"busy inside the model")
except Exception as error:
    e2e_line = f"- end to end: no result ({error})"
table = "\n".join(lines)
ort = dict(l.split("=", 1) for l in read("ort.txt").splitlines() if l.startswith("ort_") and "=" in l)
if ort:
    ort_line = (f"- ONNX Runtime, `imgd run --once` with ocr + faces: CPU "
                f"{ort.get('ort_cpu_ocr_faces_ips', '-')} images/s, CUDA execution provider "
                f"{ort.get('ort_cuda_ocr_faces_ips', '-')} images/s "
                f"(×{ort.get('ort_cuda_vs_cpu', '-')}); results agree: "
                f"{ort.get('ort_cuda_parity', '-')}"
                + "".join(f"; {k[4:]}: {v}" for k, v in ort.items() if k.endswith("_partial")))
else:
    ort_line = "- ONNX Runtime on the GPU: " + (read("ort.txt").strip().splitlines() or ["not run"])[-1]
if rows:
    summary = f"""## CLIP ViT-B/32 image tower (images/s)

{table}

- mean GPU utilisation while imgd's f16 runs (nvidia-smi, 100 ms samples): {busy_util:.0f} %
- GPU f32 == CPU f32 (relative error < 1e-3): {'yes' if parity_ok else 'NO'}
{e2e_line}
{ort_line}
"""
else:
    summary = f"""## GPU check

- CLIP: not run (no clip-bench in this call)
{ort_line}
"""
open(os.path.join(out, "gpu-table.md"), "w").write(summary)
print(summary)
for key in ("ort_cpu_ocr_faces_ips", "ort_cuda_ocr_faces_ips", "ort_cuda_parity"):
    if key in ort:
        print(f"{key}={ort[key]}")
for line in read("all-modules.txt").splitlines():
    if line.startswith("e2e_all_modules_ips="):
        print(line)
blip2 = [l for l in read("blip2.txt").splitlines() if l.startswith("blip2_")]
if blip2:
    summary_blip2 = "\n".join(f"- `{l}`" for l in blip2)
    open(os.path.join(out, "gpu-table.md"), "a").write("\n## BLIP-2, f16 (Flan-T5 in bf16)\n\n" + summary_blip2 + "\n")
    print(summary_blip2)
if rows:
    print(f"e2e_clip_ips={e2e_ips:.0f}")
    print(f"clip_vs_torch_compile={compile_ratio:.2f}")
    print(f"clip_vs_torch={ratio:.2f}")
PY
rm -rf "$SCRATCH"
