#!/usr/bin/env bash
# Cloud module benchmark: the runner against the OpenAI-compatible mock server on 127.0.0.1
# (scaled-down rate windows, 429s / 500s / slow / stalled answers injected). Prints achieved
# requests per minute against the limit; the last line is `cloud_rpm_utilization=X`
# (goal >= 0.9 with cloud_violations=0). Settings: BENCH_CLOUD_IMAGES, BENCH_CLOUD_WINDOW_S,
# BENCH_CLOUD_RPM, BENCH_CLOUD_TPM, BENCH_CLOUD_BASELINE_IMAGES (see the example's docs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p imgd-cloud --features mock-server --example bench_cloud
exec cargo run --quiet -p imgd-cloud --features mock-server --example bench_cloud
