#!/usr/bin/env bash
# Many workers on one PostgreSQL queue: N small real JPEGs drained by 1, 2 and 3 `imgd run
# --once` workers (as three hosts, IMGD_HOST) with a latency-bound fake model (FIXED_MS per
# batch of BATCH, so that workers scale on a 2-core machine as GPUs on separate hosts would),
# each count on a fresh schema of a throwaway cluster (scripts/pg-test-cluster.sh).
# Prints `workers_K_images_per_s=X` and last `workers_3_vs_1=X` (goal >= 2.7).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1800}
FIXED_MS=${FIXED_MS:-200}
BATCH=${BATCH:-8}
WORK=$(mktemp -d)
# The cluster runs as the postgres user when this script runs as root: it must reach its folder.
chmod 755 "$WORK"
export IMGD_PG_DIR=$WORK/pg IMGD_PG_PORT=${IMGD_PG_PORT:-54339}
trap 'scripts/pg-test-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

cargo build --release -q -p imgd --features fake-model
IMGD=$PWD/target/release/imgd
SERVER=$(scripts/pg-test-cluster.sh start)
mkdir -p "$WORK/tree"
for i in $(seq 1 "$N"); do cp fixtures/photos/hopper.jpg "$WORK/tree/img$i.jpg"; done

declare -A RATE
for K in 1 2 3; do
  psql -q "$SERVER" -c "DROP SCHEMA IF EXISTS w$K CASCADE; CREATE SCHEMA w$K"
  export IMGD_DB="$SERVER?options=-csearch_path%3Dw$K"
  "$IMGD" enqueue --json --modules embedding "$WORK/tree" > /dev/null
  start=$(date +%s.%N)
  pids=()
  for w in $(seq 1 "$K"); do
    IMGD_HOST=host-$w IMGD_FAKE_MODEL=1 IMGD_FAKE_MODEL_FIXED_MS=$FIXED_MS IMGD_FAKE_MODEL_ITEM_MS=0 \
      "$IMGD" run --once --metrics-addr off --batch-size "$BATCH" 2>/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}"
  end=$(date +%s.%N)
  done_jobs=$(psql -At "$IMGD_DB" -c "SELECT COUNT(*) FROM jobs WHERE state = 'done'")
  [ "$done_jobs" -eq "$N" ] || { echo "only $done_jobs of $N jobs done with $K workers" >&2; exit 1; }
  RATE[$K]=$(python3 -c "print(f'{$N / ($end - $start):.1f}')")
  echo "workers_${K}_images_per_s=${RATE[$K]}"
done
python3 -c "print(f'workers_3_vs_1={${RATE[3]} / ${RATE[1]}:.2f}')"
