#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, from Debian's postgresql package: its own data
# folder, port and socket, trust authentication on loopback, no fsync (the data is thrown away).
#   scripts/pg-test-cluster.sh start   initdb (once) and start; prints the URL to export as
#                                      IMGD_TEST_POSTGRES
#   scripts/pg-test-cluster.sh restart stop it (fast: clients are cut off) and start it again
#   scripts/pg-test-cluster.sh stop    stop it and delete its folder
# IMGD_PG_DIR (default /tmp/imgd-pg-test) and IMGD_PG_PORT (default 54329) move it.
set -euo pipefail
DIR="${IMGD_PG_DIR:-/tmp/imgd-pg-test}"
PORT="${IMGD_PG_PORT:-54329}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$BIN" ]; then
  echo "no PostgreSQL server found under /usr/lib/postgresql: install Debian's postgresql package" >&2
  exit 1
fi
# initdb refuses to run as root: the cluster belongs to the postgres user then.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "${1:-}" in
  start)
    mkdir -p "$DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
      as_owner "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 --no-sync >"$DIR/initdb.log"
    fi
    if ! as_owner "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
      as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start -o \
        "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=300" >/dev/null
    fi
    echo "postgres://postgres@127.0.0.1:$PORT/postgres"
    ;;
  restart)
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast -w -t 60 restart >/dev/null
    ;;
  stop)
    if [ -f "$DIR/data/PG_VERSION" ]; then
      as_owner "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
    ;;
  *)
    echo "usage: $0 start|restart|stop" >&2
    exit 2
    ;;
esac
