#!/usr/bin/env bash
# Times TrOCR-small (the OCR module's optional recogniser) on the CPU: writes a random-weight
# model of microsoft/trocr-small-printed's real size into .cache/trocr-bench/ the first time
# (torch and transformers in .venv-fixtures, ~250 MB), then runs the benchmark example on the
# line crops of fixtures/trocr/images. Prints ms per crop (encoder) and per token (decoder) at
# batch 1 and 8 and, last, trocr_batch8_vs_batch1=X.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=.cache/trocr-bench/trocr-small
if [ ! -f "$MODEL/model.safetensors" ]; then
    python3 scripts/make-fixtures.py trocr-full "$MODEL"
fi
cargo run --release -q -p imgd-trocr --example trocr_bench -- "$MODEL"
