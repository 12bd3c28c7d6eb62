#!/usr/bin/env bash
# Vector-search benchmark: builds N random normalised 512-d vectors (default 1 000 000) in a
# real database (one transaction, through the store's bulk import), loads them as `imgd search`
# does, checks one query against a full sort, and times >= 20 top-10 queries: the plain f32 scan
# on every core (baseline) and the int8 search with exact re-ranking on one thread and on every
# core, in the same process. Prints the recall@10 of the int8 search against the f32 scan,
# `vector_search_speedup=X`, and `vector_search_ms_1m=X` last: the int8 search's median query
# latency in milliseconds on every core (goal < 100 on 2 cores).
#
# Needs about 2.2 GB of disk for the database and 2.5 GB of memory for the matrix and its int8
# copy. Honours CARGO_TARGET_DIR.
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
"${CARGO_TARGET_DIR:-target}/release/examples/vector_search_bench" "$DB" "$N" "$DIM" "$QUERIES"
