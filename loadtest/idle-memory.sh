#!/usr/bin/env bash
# Idle subscriber memory of one Quicksilver node: starts a hub (in-memory transport), reads its
# RSS, holds N idle subscribers open (connect-storm, one update per second at most), and prints
# the RSS growth per subscriber.
#
#   loadtest/idle-memory.sh [N=19000] [HUB_BINARY=target/release/quicksilver]
#
# The load generator is split over 2 processes and 2 source addresses (a process may hold at most
# 20,000 open files here). The hub runs on core 0, the load generator on core 1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-19000}
HUB=${2:-$ROOT/target/release/quicksilver}
LOADGEN=${LOADGEN:-$ROOT/target/release/quicksilver-loadtest}
KEY='!ChangeThisMercureHubJWTSecretKey!'
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
OUT=$(mktemp -d /tmp/qs-idle.XXXXXX)

taskset -c 0 "$HUB" --listen "127.0.0.1:$PORT" --jwt-key "$KEY" --anonymous --log warn \
    --max-connections 0 >"$OUT/hub.log" 2>&1 &
HUB_PID=$!
trap 'kill $HUB_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
sleep 1
BASE=$(awk '/VmRSS/{print $2}' "/proc/$HUB_PID/status")

# Sample the hub's RSS while the subscribers are held.
(
    peak=0
    while kill -0 "$HUB_PID" 2>/dev/null; do
        r=$(awk '/VmRSS/{print $2}' "/proc/$HUB_PID/status" 2>/dev/null || echo 0)
        [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$OUT/peak"
        sleep 0.5
    done
) &
SAMPLER=$!

taskset -c 1 "$LOADGEN" connect-storm --subscribers "$N" --duration 10 --rate 1 \
    --sub-url "http://127.0.0.1:$PORT/.well-known/mercure" --jwt-key "$KEY" --auth none \
    --processes 2 --source-ips 127.0.0.1,127.0.0.2 --connect-rate 5000 --connect-timeout 30s \
    --hub-pid "$HUB_PID" --quiet --json-out "$OUT/report.json" >"$OUT/loadtest.txt" 2>&1 || true
kill "$SAMPLER" 2>/dev/null || true
PEAK=$(cat "$OUT/peak" 2>/dev/null || echo 0)
CONNECTED=$(jq -r '.connect.connected // .connect.subscribers_connected // empty' "$OUT/report.json" 2>/dev/null || true)
echo "hub $HUB"
echo "subscribers requested $N, connected ${CONNECTED:-?} (report: $OUT)"
echo "RSS baseline ${BASE} KiB, peak ${PEAK} KiB"
# Per subscriber actually connected (a run where some failed to connect still measures right).
case "${CONNECTED:-}" in ''|*[!0-9]*|0) CONNECTED=$N ;; esac
awk -v b="$BASE" -v p="$PEAK" -v n="$CONNECTED" 'BEGIN { printf "per subscriber: %.2f KiB\n", (p - b) / n }'
