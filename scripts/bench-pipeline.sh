#!/usr/bin/env bash
# Pipeline benchmark with the test-only fake model (latency FIXED_MS + ITEM_MS per item):
# N small real JPEGs through `imgd run --once` with only the `embedding` (fake) module, so that
# decode capacity suffices and the inference thread should never wait.
#   infer_busy_fraction = seconds the inference thread spent in the model / its lifetime
# Prints `infer_busy_fraction=X` last (goal >= 0.9).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
FIXED_MS=${FIXED_MS:-50}
ITEM_MS=${ITEM_MS:-3}
BATCH=${BATCH:-32}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cargo build --release -q -p imgd --features fake-model
IMGD=$PWD/target/release/imgd
mkdir -p "$WORK/tree"
for i in $(seq 1 "$N"); do cp fixtures/photos/hopper.jpg "$WORK/tree/img$i.jpg"; done
export IMGD_DB=$WORK/imgd.db
"$IMGD" enqueue --json --modules embedding "$WORK/tree" > /dev/null
summary=$(IMGD_FAKE_MODEL=1 IMGD_FAKE_MODEL_FIXED_MS=$FIXED_MS IMGD_FAKE_MODEL_ITEM_MS=$ITEM_MS \
  "$IMGD" run --once --json --metrics-addr off --batch-size "$BATCH" 2>/dev/null)
echo "$summary"
python3 - "$summary" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
print(f"images={s['images']} seconds={s['seconds']:.2f} images_per_s={s['images'] / s['seconds']:.0f}")
print(f"infer_busy_fraction={s['infer_busy_seconds'] / s['infer_wall_seconds']:.3f}")
PY
