#!/usr/bin/env bash
# Decode benchmark: Python-style predecessor (8 full decodes + resizes per image) vs imgd (one
# tiered decode per image), plus the JPEG DCT-scaling speedup. The corpus (>= 20 full-size
# images) is generated once under target/bench-corpus/ (git-ignored); delete it to regenerate.
# Prints CPU s/image for both, peak heap per image in flight, jpeg_dct_speedup=X and, last,
# decode_cpu_ratio=X. Figures are recorded in crates/imgd-decode/BENCH.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p imgd-decode --bench decode "$@"
