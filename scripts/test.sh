#!/usr/bin/env bash
# Runs every check and test: formatting, clippy with warnings as errors, and the whole test
# suite (unit, integration and end-to-end tests on real files and real SQLite databases).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo test --workspace --all-features
