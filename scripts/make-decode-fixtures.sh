#!/usr/bin/env bash
# Rebuilds fixtures/decode/ (the imgd-decode test inputs). Run from anywhere.
# Needs: the Pillow 11.0.0 sdist unpacked (PILLOW_TESTS=.../Tests/images), python3 with Pillow
# (a venv is made if it is missing), heif-enc (Debian: libheif-examples), cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PILLOW_TESTS:-/tmp/dl/pillow-11.0.0/Tests/images}
D=fixtures/decode
PY=${PYTHON:-python3}
if ! "$PY" -c 'import PIL' 2>/dev/null; then
  python3 -m venv target/fixture-venv
  target/fixture-venv/bin/pip install -q pillow
  PY=target/fixture-venv/bin/python
fi
mkdir -p "$D/bad"

# Real test images from the Pillow test suite.
for f in hopper.png hopper.gif hopper.bmp hopper.tif hopper.webp flower.webp \
         hopper_orientation_3.webp hopper_orientation_6.webp \
         tiff_16bit_RGB.tiff tiff_16bit_RGB_target.png tiff_tiled_raw.tif tiff_tiled_cmyk_jpeg.tif \
         tiff_tiled_planar_16bit_RGB.tiff \
         hopper.iccprofile.tif pil123rgba.png; do
  cp "$P/$f" "$D/$f"
done
cp "$P"/crash-*.tif "$D/bad/"
for f in timeout-060745d3f534ad6e4128c51d336ea5489182c69d.blp \
         timeout-9139147ce93e20eb14088fe238e541443ffd64b3.fli \
         timeout-6646305047838720; do
  cp "$P/$f" "$D/bad/$f"
done

# Derived files: progressive / restart-marker JPEGs, palette and 16-bit PNGs, bad files.
"$PY" scripts/make-decode-fixtures.py "$D"

# HEIC from a real photo, with a 240 px thumbnail; and one from an EXIF-rotated JPEG.
heif-enc -q 60 -t 240 -o "$D/flower.heic" fixtures/photos/flower.jpg >/dev/null
heif-enc -q 70 -o "$D/hopper_orientation_6.heic" fixtures/photos/hopper_orientation_6.jpg >/dev/null

# DNGs built from a real photo through a Bayer mosaic (see imgd_decode::synth::make_dng).
cargo run -q -p imgd-decode --example make-fixture-dng -- fixtures/photos/xmp_test.jpg "$D"
ls -la "$D" "$D/bad"
