#!/usr/bin/env bash
# Every local module together, end to end: `imgd run --once` over a mixed corpus of JPEGs of
# 1 to 24 megapixels (real photos, text and faces from fixtures/, resized, their EXIF kept)
# with every local module queued (metadata, technical, embedding, aesthetic, objects, caption,
# ocr, faces) and real-size models: CLIP ViT-B/32 and ViT-L/14 with the LAION aesthetic MLP,
# BLIP-base captioning and GroundingDINO-T with random weights (written once into
# .cache/bench-models/ by scripts/make-fixtures.py bench-models and make-objects-fixture.py
# --full-size: torch and transformers in .venv-fixtures, about 4 GB, a few minutes), PP-OCR
# and MTCNN from the registry (scripts/setup.sh).
#
# Prints images/s, each model's share of the inference thread's model time, the inference
# thread's busy fraction, the decode threads' busy time, GPU utilisation sampled with
# nvidia-smi when there is one, and last `e2e_all_modules_ips=X`.
#
#   scripts/bench-all-modules.sh              # 24 images, the CPU
#   scripts/bench-all-modules.sh 500 --cuda   # on a GPU (an imgd built with --features cuda)
#
# Environment: IMGD (the binary; default target/release/imgd, built when missing), BENCH_MODELS
# (the model folder), IMGD_REGISTRY_MODELS (PP-OCR and MTCNN, and ONNX Runtime unless ORT_LIB
# names its library: models/registry), PYTHON (with Pillow; default .venv-fixtures/bin/python),
# FIXTURES_PYTHON=here (make the models with this machine's python3, which has torch and
# transformers, instead of .venv-fixtures: what scripts/gpu-check.sh does), KEEP=1 to keep the
# work folder.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${1:-24}
CUDA=false
[ "${2:-}" = --cuda ] && CUDA=true
MODELS=${BENCH_MODELS:-$PWD/.cache/bench-models}
REGISTRY=${IMGD_REGISTRY_MODELS:-$PWD/models/registry}
PY=${PYTHON:-.venv-fixtures/bin/python}
IMGD=${IMGD:-target/release/imgd}

if [ ! -x "$IMGD" ]; then
    features=""
    [ "$CUDA" = true ] && features="--features cuda"
    # shellcheck disable=SC2086
    cargo build --release -q -p imgd $features
fi
python3 scripts/make-fixtures.py bench-models "$MODELS"
if [ ! -f "$MODELS/grounding-dino-tiny/model.onnx" ]; then
    python3 scripts/make-objects-fixture.py --full-size "$MODELS/grounding-dino-tiny"
fi
if [ ! -d "$REGISTRY/rapidocr" ] || [ ! -d "$REGISTRY/mtcnn" ]; then
    echo "no PP-OCR or MTCNN in $REGISTRY: run scripts/setup.sh (or scripts/fetch-registry-models.sh)" >&2
    exit 1
fi
ln -sfn "$(realpath "$REGISTRY")" "$MODELS/registry"

WORK=$(mktemp -d)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
echo "== corpus: $IMAGES JPEGs of 1 to 24 MP in $WORK/photos"
"$PY" - "$WORK/photos" "$IMAGES" <<'PY'
import glob, os, sys
from PIL import Image

out, count = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
sources = sorted(glob.glob("fixtures/photos/flower*.jpg") + glob.glob("fixtures/photos/xmp_test.jpg")
                 + glob.glob("fixtures/ocr/text_0*.jpg") + glob.glob("fixtures/faces/*.jpg"))
megapixels = [1, 2, 4, 8, 12, 16, 24]
total = 0
for i in range(count):
    source = sources[i % len(sources)]
    image = Image.open(source)
    exif = image.info.get("exif")
    mp = megapixels[i % len(megapixels)]
    scale = (mp * 1e6 / (image.width * image.height)) ** 0.5
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    path = os.path.join(out, f"{i:05d}-{mp}mp-{os.path.basename(source)}")
    resized.save(path, quality=90, **({"exif": exif} if exif else {}))
    total += size[0] * size[1]
print(f"{count} images, {total / 1e6 / count:.1f} MP on average, "
      f"{sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / 1e6:.0f} MB")
PY

printf '%s\n' "[models]" "dir = \"$MODELS\"" "cuda = $CUDA" > "$WORK/imgd.toml"
[ -n "${ORT_LIB:-}" ] && echo "onnxruntime = \"$ORT_LIB\"" >> "$WORK/imgd.toml"
export IMGD_DB=$WORK/imgd.db
"$IMGD" enqueue "$WORK/photos" > /dev/null
"$IMGD" status --config "$WORK/imgd.toml" | grep -iE "waiting|error" && {
    echo "a module is not ready (above)" >&2
    exit 1
}

SAMPLER=""
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 \
        > "$WORK/gpu.csv" &
    SAMPLER=$!
fi
echo "== imgd run --once (cuda = $CUDA)"
IMGD_LOG=info "$IMGD" run --once --json --metrics-addr off --config "$WORK/imgd.toml" \
    > "$WORK/run.json" 2> "$WORK/run.log" || {
    tail -20 "$WORK/run.log" >&2
    exit 1
}
[ -n "$SAMPLER" ] && kill "$SAMPLER" 2> /dev/null || true

python3 - "$WORK/run.json" "$WORK/gpu.csv" <<'PY'
import json, sys

run = json.load(open(sys.argv[1]))
ips = run["images"] / run["seconds"]
print(f"{run['images']} images in {run['seconds']:.1f} s: {ips:.2f} images/s; "
      f"{run['jobs_done']} jobs done, {run['jobs_failed']} failed")
busy = run["infer_busy_seconds"]
print(f"inference thread: busy {busy:.1f} s of {run['infer_wall_seconds']:.1f} s "
      f"({busy / max(run['infer_wall_seconds'], 1e-9):.0%}), {run['model_seconds']:.1f} s in the models")
for name, model in sorted(run["models"].items(), key=lambda m: -m[1]["seconds"]):
    print(f"  {name:32} {model['seconds']:8.1f} s  {model['seconds'] / max(run['model_seconds'], 1e-9):4.0%}"
          f"  {model['batches']} batches of {model['items'] / model['batches']:.1f}")
print(f"decode threads: {run['decode_seconds']:.1f} s decoding, "
      f"{run['decode_seconds'] / run['seconds']:.2f} threads busy on average")
try:
    samples = [line.split(",") for line in open(sys.argv[2]) if line.strip()]
    util = [float(s[0]) for s in samples]
    memory = [float(s[1]) for s in samples]
    print(f"GPU: {sum(util) / len(util):.0f}% utilisation on average over {len(util)} samples, "
          f"{max(memory):.0f} MiB at most")
except (OSError, ValueError, ZeroDivisionError, IndexError):
    print("GPU: not sampled")
print(f"e2e_all_modules_ips={ips:.2f}")
PY
