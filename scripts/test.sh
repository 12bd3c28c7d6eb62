#!/usr/bin/env bash
# Runs every check and test: formatting, clippy with warnings as errors, and the whole test
# suite (unit, integration and end-to-end tests on real files, real SQLite databases and a real
# PostgreSQL server: a throwaway cluster started here and stopped at the end), then the
# end-to-end suite once more with every database a PostgreSQL schema (IMGD_TEST_ENGINE).
# Test-only features are switched on; the `cuda` features are not (they need the CUDA toolkit:
# see scripts/build-gpu-bundle.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
FEATURES="imgd/fake-model imgd/fault-injection imgd-pipeline/fake-model imgd-pipeline/fault-injection imgd-infer/fake-model imgd-cloud/mock-server"
cargo fmt --all --check
export IMGD_TEST_POSTGRES
IMGD_TEST_POSTGRES="$(scripts/pg-test-cluster.sh start)"
trap 'scripts/pg-test-cluster.sh stop' EXIT
export IMGD_REQUIRE_POSTGRES=1
# Clippy's check artifacts never serve the test build: they get their own folder, which
# IMGD_TEST_LOW_DISK=1 (CI) removes before the tests are built, so the two never hold disk at
# once.
CLIPPY_TARGET="${CARGO_TARGET_DIR:-target}/clippy"
CARGO_TARGET_DIR="$CLIPPY_TARGET" cargo clippy --workspace --all-targets --features "$FEATURES" -- -D warnings
if [ "${IMGD_TEST_LOW_DISK:-0}" = 1 ]; then rm -rf "$CLIPPY_TARGET"; fi
# Examples are checked by clippy above and not built again here (each links every runtime).
cargo test --workspace --lib --bins --tests --features "$FEATURES"
cargo test --workspace --doc --features "$FEATURES"
# Every end-to-end file of the binary but postgres.rs (on PostgreSQL already) and models.rs
# (no database).
IMGD_TEST_ENGINE=postgres cargo test -p imgd --features "$FEATURES" \
  --test daemon --test enqueue --test faces --test modules --test path_map --test search \
  --test trocr --test browser
