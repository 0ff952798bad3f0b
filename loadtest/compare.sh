#!/usr/bin/env bash
# Runs the same load against floorhub (the floor: one encode per update, one write per delivery,
# nothing else), Quicksilver (in-memory transport; Redis transport with its own Redis) and nchan
# (nginx, Redis storage, its own Redis) on this machine and writes a markdown comparison table to
# loadtest/results/compare-<date>.md, with each hub's ratio to the floor measured in the same run.
#
# Servers (hub + its Redis) are pinned to core 0, the load generator to core 1 (taskset). Each
# hub and its Redis are started fresh for every case on free ports and stopped afterwards.
#
#   loadtest/compare.sh                 # the default cases (about 4 minutes)
#   CASES="b1000 pub8000" loadtest/compare.sh
#   DURATION=20 REPEAT=3 loadtest/compare.sh                      # every case 3 times
#   HUBS="quicksilver-memory floorhub" loadtest/compare.sh
#   HUBS="floorhub quicksilver-memory quicksilver-uring" CASES=b1000 loadtest/compare.sh
#                                       # quicksilver-uring: in-memory transport with --io-uring
#   SERVER_CORE=0,1 LOAD_CORE=0,1 LOAD_PROCESSES=2 loadtest/compare.sh  # the hub on both cores
#
# floorhub is not part of this repository: it is looked for in $FLOORHUB (default
# ../shared/floorhub from the repository root) and built there with cargo when its binary is
# missing. Without it the floor column is left out, and the script says so.
#
# Needs: target/release/quicksilver and target/release/quicksilver-loadtest (cargo build --release
# -p quicksilver-server -p quicksilver-loadtest), redis-server, nginx with libnginx-mod-nchan, jq,
# taskset.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
DURATION=${DURATION:-10}
CASES=${CASES:-"b1000 b100 collab b10000 pub8000"}
HUBS=${HUBS:-"floorhub quicksilver-memory quicksilver nchan"}
REPEAT=${REPEAT:-1}
LOAD_PROCESSES=${LOAD_PROCESSES:-1}
FLOORHUB=${FLOORHUB:-$ROOT/../shared/floorhub}
FLOORHUB_TARGET=${FLOORHUB_TARGET:-/tmp/floorhub-target}
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

start_quicksilver() { # start_quicksilver [memory] [extra hub arguments...]
    local rport port transport
    local kind=${1:-}
    shift || true
    if [ "$kind" = memory ]; then
        # No Redis at all; REDIS_PID stays empty and is not measured.
        REDIS_PID=
        transport=(--transport memory)
    else
        rport=$(free_port); start_redis "$rport"
        transport=(--transport redis --redis-url "redis://127.0.0.1:$rport")
    fi
    port=$(free_port)
    taskset -c "$SERVER_CORE" "$BIN/quicksilver" --listen "127.0.0.1:$port" --jwt-key "$KEY" \
        "${transport[@]}" --log warn "$@" \
        >"$WORK/quicksilver-$port.log" 2>&1 &
    HUB_PID=$!
    PIDS+=("$HUB_PID")
    wait_port "$port"
    SUB_URL="http://127.0.0.1:$port/.well-known/mercure"
    PUB_URL=$SUB_URL
    KIND=mercure
}

# Finds (or builds) floorhub; without it, drops it from HUBS and says so.
find_floorhub() {
    FLOORHUB_BIN=$FLOORHUB_TARGET/release/floorhub
    FLOORHUB=$(cd "$FLOORHUB" 2>/dev/null && pwd || echo "$FLOORHUB")
    if [ ! -f "$FLOORHUB/Cargo.toml" ]; then
        echo "floorhub not found at $FLOORHUB (set FLOORHUB=<its directory>): the floor column is left out" >&2
        FLOOR_NOTE="floorhub was not found at $FLOORHUB: no floor column in this run."
        HUBS=$(echo " $HUBS " | sed 's/ floorhub / /g')
        return
    fi
    if [ ! -x "$FLOORHUB_BIN" ]; then
        echo "building floorhub into $FLOORHUB_TARGET" >&2
        CARGO_TARGET_DIR=$FLOORHUB_TARGET cargo build --release --quiet \
            --manifest-path "$FLOORHUB/Cargo.toml" >&2
    fi
    FLOOR_NOTE="floorhub: $FLOORHUB, one thread, no auth, no history; each hub's ratio to it is from the same run."
}

start_floorhub() {
    local port
    port=$(free_port)
    REDIS_PID=
    taskset -c "$SERVER_CORE" "$FLOORHUB_BIN" --listen "127.0.0.1:$port" \
        >"$WORK/floorhub-$port.log" 2>&1 &
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
        pub8000) echo "broadcast --subscribers 1 --rate 8000 --publishers 32 --payload-bytes 200" ;;
        *) echo "unknown case $1" >&2; return 1 ;;
    esac
}

case_label() {
    case "$1" in
        b1000) echo "broadcast 1,000 subs × 100/s, 200 B" ;;
        b100) echo "broadcast 100 subs × 2,000/s, 200 B" ;;
        b10000) echo "broadcast 10,000 subs × 10/s, 200 B" ;;
        collab) echo "collab 100 docs × 10 editors × 1/s (public)" ;;
        pub8000) echo "publish 8,000/s over 32 connections, 1 subscriber, 200 B" ;;
    esac
}

run_case() {
    local name=$1 hub=$2 run=$3 json="$WORK/$1-$2-$3.json"
    case "$hub" in
        floorhub) start_floorhub ;;
        quicksilver) start_quicksilver ;;
        quicksilver-memory) start_quicksilver memory ;;
        quicksilver-uring) start_quicksilver memory --io-uring ;;
        *) start_nchan ;;
    esac
    local pids=(--hub-pid "$HUB_PID")
    [ -n "$REDIS_PID" ] && pids+=(--hub-pid "$REDIS_PID")
    # shellcheck disable=SC2046
    taskset -c "$LOAD_CORE" "$BIN/quicksilver-loadtest" $(case_args "$name") \
        --hub-kind "$KIND" --sub-url "$SUB_URL" --pub-url "$PUB_URL" --jwt-key "$KEY" \
        --duration "$DURATION" --warmup 2 --processes "$LOAD_PROCESSES" "${pids[@]}" \
        --tolerate-errors --quiet --json-out "$json" >"$WORK/$name-$hub-$run.txt" 2>&1 || true
    stop_all
    # One tab-separated line of raw values per run; the table (with the ratios to floorhub's run
    # of the same case and repetition) is rendered once every hub has run.
    if [ -s "$json" ]; then
        jq -r --arg case "$name" --arg hub "$hub" --arg run "$run" '
            [$case, $run, $hub,
             (.delivery.deliveries | tostring),
             ((.deliveries_per_hub_cpu_second // 0) | tostring),
             ((.hub_cpu_seconds // 0) | tostring),
             (if .publish.acked > 0 then (.hub_cpu_seconds // 0) * 1e6 / .publish.acked else 0 end | tostring),
             (.harness.cpu_seconds | tostring),
             (.delivery.latency.p50_ms | tostring),
             (.delivery.latency.p99_ms | tostring),
             (.delivery.lost | tostring)] | join("\t")' "$json" >>"$WORK/rows.tsv"
    else
        printf '%s\t%s\t%s\tfailed: %s\n' "$name" "$run" "$hub" "$WORK/$name-$hub-$run.txt" >>"$WORK/rows.tsv"
    fi
}

# The markdown rows: per case and repetition, each hub with its ratios to floorhub's run (deliveries
# per server CPU-second: hub / floor, higher is better; CPU per publish: hub / floor, lower is
# better).
render_rows() {
    local name label
    for name in $CASES; do
        label=$(case_label "$name")
        awk -F'\t' -v c="$name" -v label="$label" '
            $1 == c { n++; row[n] = $0; if ($3 == "floorhub" && NF > 4) { fd[$2] = $5; fp[$2] = $7 } }
            END {
                for (i = 1; i <= n; i++) {
                    split(row[i], f, "\t")
                    if (f[4] ~ /^failed/) { printf "| %s | %s | %s | run %s | | | | | | | | | |\n", label, f[3], f[4], f[2]; continue }
                    rd = (f[2] in fd && fd[f[2]] > 0) ? sprintf("%.2f", f[5] / fd[f[2]]) : "–"
                    rp = (f[2] in fp && fp[f[2]] > 0) ? sprintf("%.2f", f[7] / fp[f[2]]) : "–"
                    printf "| %s | %s | %s | %d | %d | %s | %.2f | %.1f | %s | %.2f | %.2f | %.2f | %d |\n",
                        label, f[3], f[2], f[4], f[5], rd, f[6], f[7], rp, f[8], f[9], f[10], f[11]
                }
            }' "$WORK/rows.tsv"
    done
}

FLOOR_NOTE=
case " $HUBS " in *" floorhub "*) find_floorhub ;; esac
: >"$WORK/rows.tsv"
for c in $CASES; do
    for run in $(seq 1 "$REPEAT"); do
        for hub in $HUBS; do
            echo "== $c on $hub (run $run of $REPEAT)" >&2
            run_case "$c" "$hub" "$run"
        done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$(dirname "$OUT")"
{
    echo "# Quicksilver vs the floor and nchan+Redis — $DATE"
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
    echo "$(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr). Servers (hub + its Redis) on core(s) $SERVER_CORE,"
    echo "load generator on core(s) $LOAD_CORE (taskset, $LOAD_PROCESSES process(es)). ${DURATION}s measured after a 2s warm-up."
    echo "quicksilver: Redis transport, own redis-server; quicksilver-memory: in-memory transport, no Redis. nchan: $(nginx -v 2>&1 | cut -d/ -f2),"
    echo "1 worker, Redis storage (loadtest/nchan/nginx.conf.template), own redis-server."
    echo "Server CPU = hub process + its Redis (CPU seconds over the whole run, connecting included);"
    echo "CPU per publish = that over the acknowledged publishes (warm-up included)."
    [ -n "$FLOOR_NOTE" ] && echo "$FLOOR_NOTE"
    echo "Load average (1, 5, 15 min) when the run started: $LOAD_BEFORE; when it ended: $LOAD_AFTER (anything"
    echo "else running on the machine shows here)."
    echo
    echo "Command: \`HUBS=\"$HUBS\" CASES=\"$CASES\" DURATION=$DURATION REPEAT=$REPEAT SERVER_CORE=$SERVER_CORE LOAD_CORE=$LOAD_CORE LOAD_PROCESSES=$LOAD_PROCESSES loadtest/compare.sh\`"
    echo
    echo "| case | hub | run | deliveries | deliveries / server CPU-s | × floor | server CPU s | server CPU µs / publish | × floor | load-gen CPU s | p50 ms | p99 ms | lost |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    render_rows
} >"$OUT"
cat "$OUT"
echo "raw reports: $WORK" >&2
