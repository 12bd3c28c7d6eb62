#!/usr/bin/env bash
# Times the objects module (GroundingDINO-T through ONNX Runtime) on the CPU: writes a
# random-weight export of the real size into .cache/objects-bench/ the first time (torch and
# transformers in .venv-fixtures, ~700 MB, a few minutes), then runs the benchmark example on
# the photos of fixtures/photos. Prints ms/image at batch 1 and 4 and, last,
# objects_batch4_vs_batch1=X. Needs scripts/setup.sh (ONNX Runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=.cache/objects-bench/grounding-dino-t
if [ ! -f "$MODEL/model.onnx" ]; then
    python3 scripts/make-objects-fixture.py --full-size "$MODEL"
fi
cargo run --release -q -p imgd-objects --example objects_bench -- "$MODEL" "$@"
