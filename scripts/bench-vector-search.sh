#!/usr/bin/env bash
# Vector-search benchmark: builds N random normalised 512-d vectors (default 1 000 000) in a
# real database (one transaction, through the store's bulk import), loads them as `imgd search`
# does, checks one query against a full sort, and times >= 20 top-10 queries on one thread
# (baseline) and on every core. Prints `vector_search_ms_1m=X` last: the median query latency
# in milliseconds (goal < 100 on 2 cores).
#
# Needs about 2.2 GB of disk for the database and 2 GB of memory for the matrix.
# Settings: N, DIM, QUERIES, WORK (a folder to keep the database in).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
DIM=${DIM:-512}
QUERIES=${QUERIES:-25}
if [ -z "${WORK:-}" ]; then
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
fi
DB=$WORK/vectors.db
rm -f "$DB" "$DB-wal" "$DB-shm"

cargo build --release -q -p imgd-store --example vector_search_bench
target/release/examples/vector_search_bench "$DB" "$N" "$DIM" "$QUERIES"
