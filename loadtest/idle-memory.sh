#!/usr/bin/env bash
# Idle subscriber memory: starts NODES Quicksilver nodes (one node: in-memory transport; several: a
# cluster sharing one Redis), reads their RSS, holds N idle subscribers open spread evenly over the
# nodes (connect-storm, one update per second at most), and prints each node's RSS growth per
# subscriber it held.
#
#   loadtest/idle-memory.sh [N=19000] [HUB_BINARY=target/release/quicksilver]
#   NODES=5 CONNECT_RATE=2000 loadtest/idle-memory.sh 95000   # 5 nodes holding 95,000 together
#   (CONNECT_RATE: subscribers opened per second, all processes; default 5000)
#   AUTH=own HUB_ARGS='--admin-jwt-key k' loadtest/idle-memory.sh 10000   # each its own token
#   (AUTH: none (default: anonymous subscribers), shared (one token for all) or own (a token per
#   subscriber, with sub, jti and iat); HUB_ARGS: more flags for every node)
#
# A process may hold at most 20,000 open files here, so the load generator runs one worker process
# per 10,000 subscribers (at least 2), each on its own source address (127.0.0.x). The hubs run on
# core 0, the load generator on core 1. Past ~50,000 subscribers one core is not enough for the load
# generator to send every request head promptly, so the hubs allow 60 s for a head (the default 10 s
# would close connections the generator has not written to yet, which says nothing about memory).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-19000}
HUB=${2:-$ROOT/target/release/quicksilver}
NODES=${NODES:-1}
LOADGEN=${LOADGEN:-$ROOT/target/release/quicksilver-loadtest}
KEY='!ChangeThisMercureHubJWTSecretKey!'
OUT=$(mktemp -d /tmp/qs-idle.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() {
    for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    echo "nothing listens on $1" >&2
    return 1
}

transport=(--transport memory)
if [ "$NODES" -gt 1 ]; then
    RPORT=$(free_port)
    taskset -c 0 redis-server --port "$RPORT" --save '' --appendonly no --bind 127.0.0.1 \
        >"$OUT/redis.log" 2>&1 &
    PIDS+=($!)
    wait_port "$RPORT"
    transport=(--transport redis --redis-url "redis://127.0.0.1:$RPORT")
fi

HUB_PIDS=()
SUB_URLS=()
for i in $(seq 1 "$NODES"); do
    port=$(free_port)
    # shellcheck disable=SC2086 # HUB_ARGS is a list of flags
    taskset -c 0 "$HUB" --listen "127.0.0.1:$port" --jwt-key "$KEY" --anonymous --log warn \
        --max-connections 0 --header-read-timeout 60s "${transport[@]}" ${HUB_ARGS:-} \
        >"$OUT/hub-$i.log" 2>&1 &
    HUB_PIDS+=($!)
    PIDS+=($!)
    SUB_URLS+=(--sub-url "http://127.0.0.1:$port/.well-known/mercure")
    wait_port "$port"
done
sleep 1
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
BASES=()
for p in "${HUB_PIDS[@]}"; do BASES+=("$(rss "$p")"); done

# Sample each hub's RSS while the subscribers are held; keep each one's peak.
(
    declare -A peak
    while kill -0 "${HUB_PIDS[0]}" 2>/dev/null; do
        for p in "${HUB_PIDS[@]}"; do
            r=$(rss "$p")
            if [ "${r:-0}" -gt "${peak[$p]:-0}" ]; then peak[$p]=$r; echo "$r" >"$OUT/peak-$p"; fi
        done
        sleep 0.5
    done
) &
SAMPLER=$!

case "${AUTH:-none}" in
    none) auth=(--auth none) ;;
    shared) auth=(--auth header) ;;
    own) auth=(--auth header --token-per-subscriber) ;;
    *) echo "AUTH must be none, shared or own" >&2; exit 2 ;;
esac
PROCS=$(( (N + 9999) / 10000 )); [ "$PROCS" -lt 2 ] && PROCS=2
IPS=$(seq 1 "$PROCS" | sed 's/^/127.0.0./' | paste -sd,)
taskset -c 1 "$LOADGEN" connect-storm --subscribers "$N" --duration 10 --rate 1 \
    "${SUB_URLS[@]}" --jwt-key "$KEY" "${auth[@]}" \
    --processes "$PROCS" --source-ips "$IPS" --connect-rate "${CONNECT_RATE:-5000}" --connect-timeout 30s \
    --quiet --json-out "$OUT/report.json" >"$OUT/loadtest.txt" 2>&1 || true
kill "$SAMPLER" 2>/dev/null || true
CONNECTED=$(jq -r '.connect.connected // .connect.subscribers_connected // empty' "$OUT/report.json" 2>/dev/null || true)
case "${CONNECTED:-}" in ''|*[!0-9]*|0) CONNECTED=$N ;; esac
echo "hub $HUB, $NODES node(s), tokens: ${AUTH:-none}, flags: ${HUB_ARGS:-none}"
echo "subscribers requested $N, connected $CONNECTED over $PROCS load-generator processes (report: $OUT)"
# Each node held CONNECTED / NODES subscribers (round robin).
per_node=$(( CONNECTED / NODES ))
total_growth=0
for i in "${!HUB_PIDS[@]}"; do
    p=${HUB_PIDS[$i]}
    peak=$(cat "$OUT/peak-$p" 2>/dev/null || echo 0)
    growth=$(( peak - BASES[i] ))
    total_growth=$(( total_growth + growth ))
    awk -v n="$((i + 1))" -v b="${BASES[$i]}" -v p="$peak" -v s="$per_node" \
        'BEGIN { printf "node %d: RSS baseline %d KiB, peak %d KiB, per subscriber %.2f KiB\n", n, b, p, (p - b) / s }'
done
awk -v g="$total_growth" -v n="$CONNECTED" 'BEGIN { printf "per subscriber: %.2f KiB\n", g / n }'
