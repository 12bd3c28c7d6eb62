#!/usr/bin/env bash
# Soak test: `imgd run` on a few hundred real JPEGs (metadata, technical and the fake
# embedding model) for MINUTES minutes while this script
#   - SIGKILLs the daemon at random moments and starts it again at once (as systemd would),
#   - enqueues again, deletes, truncates and replaces files under it,
#   - abuses its HTTP port on loopback (huge declared bodies, bodies that never come, idle and
#     half-sent connections, floods of requests: bounded loops),
# then drains the queue with one `imgd run --once` right after the last kill and checks:
#   every job of a present image is done, or failed with a reason; no result row is
#   duplicated; `PRAGMA integrity_check` is ok; /healthz answered throughout.
# Prints `soak_kills=N soak_http_requests=N soak_files_mutated=N soak_jobs_lost=N` last.
#   MINUTES=2 IMAGES=300 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${MINUTES:-2}
IMAGES=${IMAGES:-300}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
WORK=$(mktemp -d)
DAEMON_PID=""
cleanup() {
  [ -n "$DAEMON_PID" ] && kill -KILL "$DAEMON_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The test build (dependencies optimised, imgd's own crates not): what the test suite runs.
cargo build -q -p imgd --features fake-model
IMGD=$PWD/target/debug/imgd
export IMGD_DB=$WORK/imgd.db IMGD_FAKE_MODEL=1 IMGD_FAKE_MODEL_FIXED_MS=20 IMGD_FAKE_MODEL_ITEM_MS=2
TREE=$WORK/tree
mkdir -p "$TREE"
SOURCES=(fixtures/photos/flower.jpg fixtures/photos/hopper.jpg fixtures/photos/flower2.jpg
         fixtures/photos/exif_gps.jpg)
for i in $(seq 1 "$IMAGES"); do cp "${SOURCES[$((i % 4))]}" "$TREE/img$i.jpg"; done
MODULES=metadata,technical,embedding
"$IMGD" enqueue --modules "$MODULES" "$TREE" > /dev/null

start_daemon() {
  "$IMGD" run --metrics-addr "127.0.0.1:$PORT" 2>> "$WORK/daemon.log" &
  DAEMON_PID=$!
}

# HTTP abuse: one round of every attack, bounded in count and time, loopback only. Prints the
# number of requests it made and whether /healthz answered at the end.
http_round() {
  python3 - "$PORT" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
addr = ("127.0.0.1", port)
made = 0
def conn():
    s = socket.create_connection(addr, timeout=2)
    return s
try:
    held = []
    for payload in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
                    b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ",
                    b"POST /status HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
                    b"POST /api/enqueue HTTP/1.1\r\nHost: localhost\r\nContent-Length: 70000\r\n\r\n",
                    b"POST /api/enqueue HTTP/1.1\r\nHost: localhost\r\nContent-Length: 9\r\n\r\n{\"paths\":",
                    b"GET /api/events HTTP/1.1\r\nHost: evil.example\r\n\r\n"):
        s = conn(); s.sendall(payload); held.append(s); made += 1
    # More event streams than the server keeps open, all held.
    for _ in range(40):
        s = conn(); s.sendall(b"GET /api/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        held.append(s); made += 1
    for _ in range(200):
        held.append(conn()); made += 1
    for path in ("/metrics", "/status", "/healthz", "/nope", "/", "/search?q=%22%3E", "/image/1",
                 "/image/1/thumbnail.jpg", "/people") * 10:
        s = conn(); s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        s.recv(64); s.close(); made += 1
    t = time.time()
    s = conn(); s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    ok = s.recv(64).startswith(b"HTTP/1.1 200"); made += 1
    print(made, "ok" if ok else "bad", f"{time.time() - t:.3f}")
    for s in held:
        s.close()
except OSError as e:
    print(made, "down", repr(e))
PY
}

kills=0 requests=0 mutated=0 health_bad=0 health_down=0
deadline=$(( $(date +%s) + MINUTES * 60 ))
start_daemon
while [ "$(date +%s)" -lt "$deadline" ]; do
  sleep "0.$((RANDOM % 9 + 1))"
  case $((RANDOM % 6)) in
    0)  kill -KILL "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
        kills=$((kills + 1))
        start_daemon ;;
    1)  i=$((RANDOM % IMAGES + 1)); rm -f "$TREE/img$i.jpg"; mutated=$((mutated + 1)) ;;
    2)  i=$((RANDOM % IMAGES + 1))
        [ -f "$TREE/img$i.jpg" ] && truncate -s 1000 "$TREE/img$i.jpg" && mutated=$((mutated + 1)) ;;
    3)  i=$((RANDOM % IMAGES + 1))
        cp "${SOURCES[$((RANDOM % 4))]}" "$TREE/img$i.jpg.tmp" && mv "$TREE/img$i.jpg.tmp" "$TREE/img$i.jpg"
        mutated=$((mutated + 1)) ;;
    4)  "$IMGD" enqueue --modules "$MODULES" "$TREE" > /dev/null 2>&1 || true ;;
    5)  if kill -0 "$DAEMON_PID" 2>/dev/null; then
          read -r made verdict _ < <(http_round)
          requests=$((requests + made))
          if [ "$verdict" = "bad" ]; then health_bad=$((health_bad + 1)); fi
          # "down" only counts while the daemon lives: it may be starting after a kill.
          if [ "$verdict" = "down" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
            health_down=$((health_down + 1))
          fi
        fi ;;
  esac
done
kill -KILL "$DAEMON_PID" 2>/dev/null || true
wait "$DAEMON_PID" 2>/dev/null || true
kills=$((kills + 1))
DAEMON_PID=""
# The last word on the files: register what changed, then drain at once.
"$IMGD" enqueue --modules "$MODULES" "$TREE" > /dev/null 2>&1 || true
"$IMGD" run --once --metrics-addr off 2>> "$WORK/daemon.log"

lost=$(sqlite3 "$IMGD_DB" "
  SELECT COUNT(*) FROM jobs j JOIN images i ON i.id = j.image_id
  WHERE i.state = 'present'
    AND NOT (j.state = 'done' OR (j.state = 'failed' AND j.last_error IS NOT NULL))")
duplicated=$(sqlite3 "$IMGD_DB" "
  SELECT (SELECT COUNT(*) - COUNT(DISTINCT image_id) FROM result_metadata)
       + (SELECT COUNT(*) - COUNT(DISTINCT image_id) FROM result_technical)
       + (SELECT COUNT(*) - COUNT(DISTINCT image_id || ':' || model_id) FROM result_embedding)")
integrity=$(sqlite3 "$IMGD_DB" "PRAGMA integrity_check")
done_jobs=$(sqlite3 "$IMGD_DB" "SELECT COUNT(*) FROM jobs WHERE state = 'done'")
failed_jobs=$(sqlite3 "$IMGD_DB" "SELECT COUNT(*) FROM jobs WHERE state = 'failed'")
missing=$(sqlite3 "$IMGD_DB" "SELECT COUNT(*) FROM images WHERE state = 'missing'")
echo "jobs done=$done_jobs failed=$failed_jobs (each with its reason); images missing=$missing"
sqlite3 "$IMGD_DB" "SELECT last_error, COUNT(*) FROM jobs WHERE state = 'failed'
                    GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
echo "integrity_check=$integrity duplicated_rows=$duplicated healthz_slow_or_failed=$health_bad healthz_down=$health_down"
echo "soak_kills=$kills soak_http_requests=$requests soak_files_mutated=$mutated soak_jobs_lost=$lost"
[ "$lost" = 0 ] && [ "$duplicated" = 0 ] && [ "$integrity" = ok ] && [ "$health_down" = 0 ]
