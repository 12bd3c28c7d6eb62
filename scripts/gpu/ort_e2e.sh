#!/usr/bin/env bash
# End to end through ONNX Runtime: `imgd run --once` with the `ocr` (PP-OCRv6) and `faces`
# (MTCNN) modules over copies of fixtures/ocr/*.jpg and fixtures/faces/*.jpg, once with
# `[models] cuda = false` and once with `cuda = true` + `onnx_cuda = true`, the same library,
# models and files. Prints images/s of each, CUDA ÷ CPU, and whether the results agree (scripts/gpu/ort_parity.py):
#
#   ort_cpu_ocr_faces_ips=…  ort_cuda_ocr_faces_ips=…  ort_cuda_vs_cpu=…  ort_cuda_parity=ok|…
#
#   scripts/gpu/ort_e2e.sh IMGD LIBONNXRUNTIME MODELS_DIR
#
# MODELS_DIR holds rapidocr/ (PP-OCRv6 det/rec, PP-OCR cls) and mtcnn/ (pnet/rnet/onet). The
# library is onnxruntime-gpu's libonnxruntime.so.1.x (its CUDA provider beside it); the CUDA
# libraries it loads (cuBLAS 13, cuDNN 9, cudart 13, cuRAND 10, cuFFT 12) come from
# LD_LIBRARY_PATH. Every failure is reported and the script goes on: a run that fails prints
# why (the log's last errors) and `ort_cuda_parity=` says what is missing. Always exits 0.
#
# Environment:
#   ORT_COPIES   copies of the 27 fixtures (default 10: 270 images)
#   ORT_FILES    the files to copy instead of the fixtures (space-separated)
#   ORT_MODES    default "cpu cuda"
#   ORT_SESSIONS `[models] onnx_sessions_per_model` of the CUDA run (default: imgd's, 32)
#   ORT_TIMEOUT  seconds per run (default 75); a run cut short reports what it stored, as
#                `ort_<mode>_partial=`, and its images/s over the images it finished
#   ORT_KEEP     a folder to keep the corpus, configs, logs and databases in (default: a temp
#                folder, removed)
set -uo pipefail
cd "$(dirname "$0")/../.."
IMGD=${1:?usage: ort_e2e.sh IMGD LIBONNXRUNTIME MODELS_DIR}
ORT_LIB=${2:?usage: ort_e2e.sh IMGD LIBONNXRUNTIME MODELS_DIR}
MODELS=${3:?usage: ort_e2e.sh IMGD LIBONNXRUNTIME MODELS_DIR}
COPIES=${ORT_COPIES:-10}
MODES=${ORT_MODES:-cpu cuda}
TIMEOUT=${ORT_TIMEOUT:-75}
WORK=${ORT_KEEP:-$(mktemp -d)}
mkdir -p "$WORK/photos"
IMGD=$(realpath "$IMGD")
ORT_LIB=$(realpath "$ORT_LIB")
MODELS=$(realpath "$MODELS")

echo "ONNX Runtime library: $ORT_LIB"
ls -l "$(dirname "$ORT_LIB")" | grep -E "libonnxruntime" | awk '{print "  " $5, $9}'
if [ -f "$(dirname "$ORT_LIB")/libonnxruntime_providers_cuda.so" ]; then
    # What the CUDA provider needs, and where this machine finds it.
    LD_LIBRARY_PATH=$(dirname "$ORT_LIB"):${LD_LIBRARY_PATH:-} \
        ldd "$(dirname "$ORT_LIB")/libonnxruntime_providers_cuda.so" 2>&1 \
        | grep -E "cublas|cudart|curand|libcuda\.|not found" | sed 's/^\s*/  /'
    for soname in libcudnn.so.9 libcufft.so.12 libnvrtc.so.13; do
        found=$(for d in ${LD_LIBRARY_PATH//:/ }; do [ -e "$d/$soname" ] && echo "$d/$soname" && break; done)
        echo "  $soname (loaded at run time) => ${found:-not found on LD_LIBRARY_PATH}"
    done
fi

for i in $(seq 1 "$COPIES"); do
    for f in ${ORT_FILES:-fixtures/ocr/*.jpg fixtures/faces/*.jpg}; do
        cp "$f" "$WORK/photos/$i-$(basename "$f")"
    done
done
count=$(ls "$WORK/photos" | wc -l)
echo "corpus: $count JPEG files ($COPIES copies of ${ORT_FILES:-fixtures/ocr/*.jpg and fixtures/faces/*.jpg})"

declare -A IPS
for mode in $MODES; do
    cuda=false
    [ "$mode" = cuda ] && cuda=true
    printf '%s\n' "[models]" "dir = \"$MODELS\"" "ocr = \"$MODELS/rapidocr\"" \
        "onnxruntime = \"$ORT_LIB\"" "cuda = $cuda" "onnx_cuda = $cuda" "ocr_needs_text = false" \
        "onnx_sessions_per_model = ${ORT_SESSIONS:-0}" > "$WORK/$mode.toml"
    rm -f "$WORK/$mode.db"*
    IMGD_DB=$WORK/$mode.db "$IMGD" enqueue --modules ocr,faces "$WORK/photos" > /dev/null
    start=$(date +%s.%N)
    IMGD_DB=$WORK/$mode.db IMGD_LOG=info timeout "$TIMEOUT" "$IMGD" run --once --json \
        --metrics-addr off --config "$WORK/$mode.toml" > "$WORK/$mode.json" 2> "$WORK/$mode.log"
    rc=$?
    end=$(date +%s.%N)
    grep -E "ONNX Runtime loaded|module (ocr|faces): .* loaded|fixed-shape sessions" "$WORK/$mode.log" | sed -E 's/\x1b\[[0-9;]*m//g' \
        | sed -E 's/^[^ ]+ +//' | cut -c1-220 | sed "s/^/  [$mode] /"
    summary=$(python3 - "$WORK/$mode.json" "$start" "$end" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    print("none"); sys.exit()
if r["images"] == 0:  # a module whose model did not load leaves its jobs queued
    print("none"); sys.exit()
wall = float(sys.argv[3]) - float(sys.argv[2])
ips = r["images"] / max(r["seconds"], 1e-9)
busy = r["infer_busy_seconds"] / max(r["infer_wall_seconds"], 1e-9)
print(f"{ips:.2f} {r['images']} {r['seconds']:.1f} {wall:.1f} {busy:.2f} {r['jobs_done']} {r['jobs_failed']}")
PY
)
    if [ "$rc" != 0 ] || [ "$summary" = none ]; then
        echo "  [$mode] imgd run did not finish (exit $rc$([ "$rc" = 124 ] && echo ": timed out after ${TIMEOUT}s")); last errors:"
        sed -E 's/\x1b\[[0-9;]*m//g' "$WORK/$mode.log" | grep -iE "error|warn|panic|fail" | tail -8 | cut -c1-400 | sed 's/^/    /'
        # What the writer stored before it stopped (it commits every few images): a partial
        # figure, images with both results per second of the whole process (loading included).
        partial=$(python3 - "$WORK/$mode.db" "$start" "$end" <<'PY' 2>/dev/null
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n = lambda q: db.execute(q).fetchone()[0]
secs = float(sys.argv[3]) - float(sys.argv[2])
both = n("SELECT count(*) FROM result_ocr o JOIN result_faces f ON f.image_id = o.image_id")
images = n("SELECT count(*) FROM images")
print(f"{both / secs:.2f} {both} {images} {secs:.0f}" if both else "none")
PY
)
        if [ -n "$partial" ] && [ "$partial" != none ]; then
            read -r ips both total secs <<< "$partial"
            echo "  [$mode] partial: $both of $total images analysed in ${secs}s (model loading included)"
            IPS[$mode]=$ips
            echo "ort_${mode}_ocr_faces_ips=$ips"
            echo "ort_${mode}_partial=$both/$total images in ${secs}s"
        else
            IPS[$mode]=
            echo "  [$mode] no image analysed"
            echo "ort_${mode}_ocr_faces_ips=failed"
        fi
        continue
    fi
    read -r ips images secs wall busy done failed <<< "$summary"
    if grep -q "cannot load its model" "$WORK/$mode.log"; then
        sed -E 's/\x1b\[[0-9;]*m//g' "$WORK/$mode.log" | grep "cannot load its model" | cut -c1-400 | sed "s/^/  [$mode] /"
    fi
    echo "  [$mode] $images images in ${secs}s (process ${wall}s with model loading), inference thread busy $busy, $done jobs done, $failed failed"
    failures=$(sqlite3 "$WORK/$mode.db" "SELECT module || ': ' || substr(last_error, 1, 300) FROM jobs WHERE last_error IS NOT NULL LIMIT 3" 2>/dev/null \
        || python3 -c "import sqlite3,sys; [print(m+': '+(e or '')[:300]) for m,e in sqlite3.connect(sys.argv[1]).execute('SELECT module, last_error FROM jobs WHERE last_error IS NOT NULL LIMIT 3')]" "$WORK/$mode.db")
    [ -n "$failures" ] && echo "$failures" | sed "s/^/  [$mode] job error: /"
    IPS[$mode]=$ips
    echo "ort_${mode}_ocr_faces_ips=$ips"
done

if [ -n "${IPS[cpu]:-}" ] && [ -n "${IPS[cuda]:-}" ]; then
    python3 -c "import sys; print(f'ort_cuda_vs_cpu={float(sys.argv[2]) / float(sys.argv[1]):.2f}')" "${IPS[cpu]}" "${IPS[cuda]}"
    python3 scripts/gpu/ort_parity.py "$WORK/cpu.db" "$WORK/cuda.db"
elif [[ " $MODES " == *" cuda "* ]]; then
    echo "ort_cuda_parity=no comparison: the $([ -z "${IPS[cuda]:-}" ] && echo CUDA || echo CPU) run failed"
fi
[ -z "${ORT_KEEP:-}" ] && rm -rf "$WORK"
exit 0
