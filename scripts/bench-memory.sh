#!/usr/bin/env bash
# Memory benchmark: peak RSS of `imgd run --once` over 24 MP JPEGs with every local module
# (metadata, technical, embedding, aesthetic, objects, caption, ocr, faces: the tiny fixture
# models stand in for CLIP, BLIP and GroundingDINO, PP-OCR and MTCNN are the registry's), at a
# pixel budget (`[decode] memory_mb`) of 512 MiB and of 4 GiB, against a baseline run of one
# image (the models, the runtime and one image's worth of work).
# Prints, per budget, the peak RSS, the peak of `imgd_decode_pixels_in_flight_bytes`, and
# `rss_over_baseline_mb_<budget>=X` (peak RSS minus the baseline: it must stay under the
# budget plus the decode threads' own buffers).
#   N=80 scripts/bench-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-80}
WORK=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

cargo build -q -p imgd
IMGD=$PWD/target/debug/imgd
export IMGD_MODELS=$WORK/models

# 24 MP JPEGs: the fixture photos upscaled to 6000x4000 with grain, so that none decodes
# faster than a real photo would.
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q pillow numpy
"$WORK/venv/bin/python" - "$WORK/photos" "$N" <<'PY'
import os, sys, glob
import numpy as np
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
sources = sorted(glob.glob("fixtures/photos/*.jpg")) + ["fixtures/faces/astronaut.jpg", "fixtures/ocr/text_00.jpg"]
rng = np.random.default_rng(7)
made = []
for i, path in enumerate(sources[:8]):
    img = Image.open(path).convert("RGB").resize((6000, 4000), Image.BICUBIC)
    a = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (4000, 6000, 3), dtype=np.int16)
    name = f"{out}/base{i}.jpg"
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(name, quality=90)
    made.append(name)
for i in range(n):
    os.link(made[i % len(made)], f"{out}/img{i:04}.jpg")
for name in made:
    os.remove(name)
PY

mkdir -p "$IMGD_MODELS"
cp -r fixtures/clip/tiny-clip "$IMGD_MODELS/clip-vit-b32"
cp -r fixtures/clip/tiny-aesthetic "$IMGD_MODELS/aesthetic"
cp -r fixtures/blip/tiny-blip "$IMGD_MODELS/blip-base-caption"
cp -r fixtures/objects/tiny-grounding-dino "$IMGD_MODELS/grounding-dino-tiny"
MODULES=metadata,technical,embedding,aesthetic,objects,caption,ocr,faces

run() { # run BUDGET_MB DB PHOTOS -> "peak_rss_kb peak_pixels_bytes seconds"
  local budget=$1 db=$2 photos=$3 port=$((20000 + RANDOM % 20000))
  cat > "$WORK/imgd.toml" <<EOF
[models]
aesthetic_clip = "clip-vit-b32"
aesthetic_mlp = "$IMGD_MODELS/aesthetic"
[objects]
# The tiny fixture's text side holds four phrases, not the sixteen defaults.
prompts = ["cat", "dog", "text", "street sign"]
[decode]
memory_mb = $budget
EOF
  "$IMGD" --db "$db" enqueue --modules "$MODULES" "$photos" > /dev/null
  local start=$SECONDS
  /usr/bin/time -f "%M" -o "$WORK/rss" "$IMGD" --db "$db" run --once --config "$WORK/imgd.toml" \
    --metrics-addr "127.0.0.1:$port" 2> "$WORK/run.log" &
  local pid=$! peak=0
  while kill -0 "$pid" 2>/dev/null; do
    v=$({ curl -s "http://127.0.0.1:$port/metrics" 2>/dev/null || true; } \
        | awk '/^imgd_decode_pixels_in_flight_bytes /{print $2}')
    if [ -n "$v" ] && [ "$v" -gt "$peak" ]; then peak=$v; fi
    sleep 0.2
  done
  if ! wait "$pid"; then
    echo "imgd run failed:" >&2
    tail -5 "$WORK/run.log" >&2
    exit 1
  fi
  echo "$(tail -1 "$WORK/rss") $peak $((SECONDS - start))"
}

mkdir -p "$WORK/one"
ln "$WORK/photos/img0000.jpg" "$WORK/one/img.jpg"
read -r base_kb base_px base_s < <(run 512 "$WORK/one.db" "$WORK/one")
echo "baseline (1 image): peak RSS $((base_kb / 1024)) MiB in ${base_s}s"
for budget in 512 4096; do
  read -r kb px s < <(run "$budget" "$WORK/b$budget.db" "$WORK/photos")
  echo "budget ${budget} MiB, $N images of 24 MP: peak RSS $((kb / 1024)) MiB, pixels in flight at most $((px / 1048576)) MiB, ${s}s"
  echo "rss_over_baseline_mb_${budget}=$(((kb - base_kb) / 1024))"
done
