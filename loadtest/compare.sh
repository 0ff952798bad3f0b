#!/usr/bin/env bash
# Runs the same load against Quicksilver (Redis transport, its own Redis) and nchan (nginx, Redis
# storage, its own Redis) on this machine and writes a markdown comparison table to
# loadtest/results/compare-<date>.md.
#
# Servers (hub + its Redis) are pinned to core 0, the load generator to core 1 (taskset). Each
# hub and its Redis are started fresh for every case on free ports and stopped afterwards.
#
#   loadtest/compare.sh                 # the default cases (about 2 minutes)
#   CASES="b1000 collab" loadtest/compare.sh
#   DURATION=20 loadtest/compare.sh
#   HUBS="quicksilver quicksilver-memory nchan" loadtest/compare.sh   # also the in-memory transport
#
# Needs: target/release/quicksilver and target/release/quicksilver-loadtest (cargo build --release
# -p quicksilver-server -p quicksilver-loadtest), redis-server, nginx with libnginx-mod-nchan, jq,
# taskset.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
DURATION=${DURATION:-10}
CASES=${CASES:-"b1000 b100 collab b10000"}
HUBS=${HUBS:-"quicksilver nchan"}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
KEY='!ChangeThisMercureHubJWTSecretKey!'
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-$ROOT/loadtest/results/compare-$DATE.md}
WORK=$(mktemp -d /tmp/qs-compare.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {
    for _ in $(seq 1 100); do
        if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}

stop_all() {
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}

start_redis() {
    local port=$1
    taskset -c "$SERVER_CORE" redis-server --port "$port" --save '' --appendonly no \
        --bind 127.0.0.1 >"$WORK/redis-$port.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_port "$port"
}

start_quicksilver() { # start_quicksilver [memory]
    local rport port transport
    if [ "${1:-}" = memory ]; then
        # No Redis at all; REDIS_PID stays empty and is not measured.
        REDIS_PID=
        transport=(--transport memory)
    else
        rport=$(free_port); start_redis "$rport"
        transport=(--transport redis --redis-url "redis://127.0.0.1:$rport")
    fi
    port=$(free_port)
    taskset -c "$SERVER_CORE" "$BIN/quicksilver" --listen "127.0.0.1:$port" --jwt-key "$KEY" \
        "${transport[@]}" --log warn \
        >"$WORK/quicksilver-$port.log" 2>&1 &
    HUB_PID=$!
    PIDS+=("$HUB_PID")
    wait_port "$port"
    SUB_URL="http://127.0.0.1:$port/.well-known/mercure"
    PUB_URL=$SUB_URL
    KIND=mercure
}

start_nchan() {
    local rport port dir
    rport=$(free_port); start_redis "$rport"
    port=$(free_port)
    dir="$WORK/nchan-$port"; mkdir -p "$dir"
    sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$port#g" -e "s#@REDIS@#redis://127.0.0.1:$rport#g" \
        "$ROOT/loadtest/nchan/nginx.conf.template" >"$dir/nginx.conf"
    taskset -c "$SERVER_CORE" nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/stdout.log" 2>&1 &
    local master=$!
    PIDS+=("$master")
    wait_port "$port"
    # The worker process does the work; the master only supervises.
    HUB_PID=$(pgrep -P "$master" | head -1)
    SUB_URL="http://127.0.0.1:$port/sub"
    PUB_URL="http://127.0.0.1:$port/pub"
    KIND=nchan
}

# case name → scenario arguments
case_args() {
    case "$1" in
        b1000) echo "broadcast --subscribers 1000 --rate 100 --payload-bytes 200" ;;
        b100) echo "broadcast --subscribers 100 --rate 2000 --publishers 8 --payload-bytes 200" ;;
        b10000) echo "broadcast --subscribers 10000 --rate 10 --payload-bytes 200 --connect-rate 4000" ;;
        collab) echo "collab --documents 100 --editors 10 --editor-rate 1 --public" ;;
        *) echo "unknown case $1" >&2; return 1 ;;
    esac
}

case_label() {
    case "$1" in
        b1000) echo "broadcast 1,000 subs × 100/s, 200 B" ;;
        b100) echo "broadcast 100 subs × 2,000/s, 200 B" ;;
        b10000) echo "broadcast 10,000 subs × 10/s, 200 B" ;;
        collab) echo "collab 100 docs × 10 editors × 1/s (public)" ;;
    esac
}

run_case() {
    local name=$1 hub=$2 json="$WORK/$1-$2.json"
    case "$hub" in
        quicksilver) start_quicksilver ;;
        quicksilver-memory) start_quicksilver memory ;;
        *) start_nchan ;;
    esac
    local pids=(--hub-pid "$HUB_PID")
    [ -n "$REDIS_PID" ] && pids+=(--hub-pid "$REDIS_PID")
    # shellcheck disable=SC2046
    taskset -c "$LOAD_CORE" "$BIN/quicksilver-loadtest" $(case_args "$name") \
        --hub-kind "$KIND" --sub-url "$SUB_URL" --pub-url "$PUB_URL" --jwt-key "$KEY" \
        --duration "$DURATION" --warmup 2 "${pids[@]}" \
        --tolerate-errors --quiet --json-out "$json" >"$WORK/$name-$hub.txt" 2>&1 || true
    stop_all
    if [ -s "$json" ]; then
        jq -r --arg case_name "$(case_label "$name")" --arg hub "$hub" '
            [$case_name, $hub,
             (.delivery.deliveries | tostring),
             ((.deliveries_per_hub_cpu_second // 0) | floor | tostring),
             ((.hub_cpu_seconds // 0) * 100 | round / 100 | tostring),
             (.harness.cpu_seconds * 100 | round / 100 | tostring),
             (.delivery.latency.p50_ms * 100 | round / 100 | tostring),
             (.delivery.latency.p99_ms * 100 | round / 100 | tostring),
             (.delivery.lost | tostring)] | "| " + join(" | ") + " |"' "$json" >>"$WORK/rows.md"
    else
        echo "| $(case_label "$name") | $hub | run failed, see $WORK/$name-$hub.txt | | | | | | |" >>"$WORK/rows.md"
    fi
}

: >"$WORK/rows.md"
for c in $CASES; do
    for hub in $HUBS; do
        echo "== $c on $hub" >&2
        run_case "$c" "$hub"
    done
done

mkdir -p "$(dirname "$OUT")"
{
    echo "# Quicksilver vs nchan+Redis — $DATE"
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
    echo "$(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr). Servers (hub + its Redis) on core $SERVER_CORE,"
    echo "load generator on core $LOAD_CORE (taskset). ${DURATION}s measured after a 2s warm-up."
    echo "quicksilver: Redis transport, own redis-server; quicksilver-memory: in-memory transport, no Redis. nchan: $(nginx -v 2>&1 | cut -d/ -f2),"
    echo "1 worker, Redis storage (loadtest/nchan/nginx.conf.template), own redis-server."
    echo "Server CPU = hub process + its Redis (CPU seconds over the whole run, connecting included)."
    echo "Load average when the run started: $LOAD_BEFORE (anything else running on the machine shows here)."
    echo
    echo "Command: \`HUBS=\"$HUBS\" CASES=\"$CASES\" DURATION=$DURATION loadtest/compare.sh\`"
    echo
    echo "| case | hub | deliveries | deliveries / server CPU-s | server CPU s | load-gen CPU s | p50 ms | p99 ms | lost |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    cat "$WORK/rows.md"
} >"$OUT"
cat "$OUT"
echo "raw reports: $WORK" >&2
