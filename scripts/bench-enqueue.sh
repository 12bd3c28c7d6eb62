#!/usr/bin/env bash
# Enqueue benchmark: a generated tree of 20 000 files in nested folders (a quarter of them not
# images). Checks that `imgd enqueue --json` counts exactly the image files, that a rescan of the
# unchanged tree finds 0 new / 0 changed, and that touching 10 files re-queues exactly 10; then
# times the rescan against `find TREE -type f -printf '%s %T@\n'` on the same warm tree.
# Prints `rescan_vs_find=X` last (goal: <= 3).
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=${FILES:-20000}
RUNS=${RUNS:-7}
WORK=${WORK:-$(mktemp -d)}
trap 'rm -rf "$WORK"' EXIT
TREE=$WORK/tree
DB=$WORK/imgd.db

cargo build --release -q -p imgd
IMGD=$PWD/target/release/imgd

python3 - "$TREE" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
exts = ["jpg", "JPG", "jpeg", "png", "heic", "CR2", "dng", "tif", "webp", "nef", "arw", "gif"]
other = ["txt", "xmp", "mp4", "json"]
for i in range(n):
    d = os.path.join(root, f"{i % 7:02d}", f"{i % 50:03d}", f"{i % 13:02d}")
    os.makedirs(d, exist_ok=True)
    if i % 4 == 3:
        name = f"f{i:06d}.{other[i % len(other)]}"
    else:
        name = f"IMG_{i:06d}.{exts[i % len(exts)]}"
    with open(os.path.join(d, name), "w") as f:
        f.write(str(i))
PY
IMAGES=$(( FILES - FILES / 4 ))

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

first=$("$IMGD" --db "$DB" enqueue --json "$TREE")
new=$(echo "$first" | json_field new)
echo "first scan: new=$new (expected $IMAGES) $(echo "$first" | json_field seconds)s"
[ "$new" -eq "$IMAGES" ] || { echo "FAIL: new=$new, expected $IMAGES"; exit 1; }

second=$("$IMGD" --db "$DB" enqueue --json "$TREE")
[ "$(echo "$second" | json_field new)" -eq 0 ] && [ "$(echo "$second" | json_field changed)" -eq 0 ] \
  || { echo "FAIL: rescan changed something: $second"; exit 1; }

# Median wall time of $RUNS runs of a command, in seconds.
median() {
  python3 - "$RUNS" "$@" <<'PY'
import subprocess, sys, time
runs, cmd = int(sys.argv[1]), sys.argv[2:]
times = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    times.append(time.perf_counter() - t)
times.sort()
print(f"{times[len(times) // 2]:.4f}")
PY
}
find "$TREE" -type f -printf '%s %T@\n' > /dev/null  # warm the cache
find_s=$(median find "$TREE" -type f -printf '%s %T@\n')
rescan_s=$(median "$IMGD" --db "$DB" enqueue --json "$TREE")
echo "find: ${find_s}s  rescan: ${rescan_s}s  (median of $RUNS, $FILES files)"

touched=0
while IFS= read -r f; do
  touch -d '+5 seconds' "$f"; touched=$((touched + 1))
done < <(find "$TREE" -name '*.jpg' | head -10)
third=$("$IMGD" --db "$DB" enqueue --json "$TREE")
changed=$(echo "$third" | json_field changed)
echo "touched $touched files: changed=$changed"
[ "$changed" -eq 10 ] || { echo "FAIL: changed=$changed, expected 10"; exit 1; }

python3 -c "print(f'rescan_vs_find={$rescan_s / $find_s:.2f}')"
