#!/usr/bin/env bash
# Redis work per update as nodes are added: N Quicksilver nodes (processes, scripts/cluster.sh)
# over one redis-server pinned to core 0, nginx routing round-robin, by topic or by partition
# (scripts/cluster.sh ROUTING=partition: nodes hash topics as nginx does), the nodes, nginx
# and the load generator on core 1. For each scenario, routing and node count, it measures Redis's
# CPU time (utime + stime from /proc) per stored update (XADD calls from INFO commandstats), the
# XREAD calls per update, Redis's connected clients at the end, and the load tester's loss verdict. Writes
# loadtest/results/interest-<date>.md.
#
#   loadtest/interest.sh          # NODES="1 3 6 12" ROUTINGS="round-robin topic"
#                                 # (or partition: PARTITIONS a multiple of every node count)
#                                 # SCENARIOS="collab broadcast" DURATION=15 PARTITIONS=256
#                                 # DOCUMENTS=60 EDITORS=4 EDITOR_RATE=2 (collab: 480 updates/s)
#                                 # SUBSCRIBERS=240 RATE=200 (broadcast: one topic)
#
# Needs target/release/quicksilver and target/release/quicksilver-loadtest (or BIN=dir),
# redis-server, nginx, jq.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
NODES=${NODES:-1 3 6 12}
ROUTINGS=${ROUTINGS:-round-robin topic}
SCENARIOS=${SCENARIOS:-collab broadcast}
DURATION=${DURATION:-15}
PARTITIONS=${PARTITIONS:-256}
DOCUMENTS=${DOCUMENTS:-60}
EDITORS=${EDITORS:-4}
EDITOR_RATE=${EDITOR_RATE:-2}
SUBSCRIBERS=${SUBSCRIBERS:-240}
RATE=${RATE:-200}
KEY='!ChangeThisMercureHubJWTSecretKey!'
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-$ROOT/loadtest/results/interest-$DATE.md}
WORK=$(mktemp -d /tmp/qs-interest.XXXXXX)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
TICKS=$(getconf CLK_TCK)

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
cpu_ticks() { # utime + stime of a process
    awk '{print $14 + $15}' "/proc/$1/stat"
}
cmdstat() { # cmdstat <port> <command> <field>: calls or usec of a command since the last reset
    local value
    value=$(redis-cli -p "$1" info commandstats | tr -d '\r' | sed -n "s/^cmdstat_$2://p" |
        tr ',' '\n' | sed -n "s/^$3=//p")
    echo "${value:-0}"
}

export CLUSTER_DIR QUICKSILVER_BIN="$BIN/quicksilver" MERCURE_JWT_KEY="$KEY" NGINX_WORKERS=1
export NGINX_PORT REDIS_PORT NODE_PORTS ROUTING PARTITIONS
trap '"$ROOT/scripts/cluster.sh" down >/dev/null 2>&1 || true' EXIT

rows=()
for scenario in $SCENARIOS; do
    for ROUTING in $ROUTINGS; do
        for n in $NODES; do
            name="$scenario-$ROUTING-$n"
            echo "== $name" >&2
            CLUSTER_DIR="$WORK/$name"
            NGINX_PORT=$(free_port); REDIS_PORT=$(free_port)
            NODE_PORTS=$(for _ in $(seq 1 "$n"); do printf '%s ' "$(free_port)"; done)
            taskset -c 1 "$ROOT/scripts/cluster.sh" up >"$WORK/$name-up.log" 2>&1
            redis_pid=$(cat "$CLUSTER_DIR/redis-$REDIS_PORT.pid")
            taskset -cp 0 "$redis_pid" >/dev/null
            url="http://127.0.0.1:$NGINX_PORT/.well-known/mercure"
            case $scenario in
                collab) args=(collab --documents "$DOCUMENTS" --editors "$EDITORS"
                              --editor-rate "$EDITOR_RATE") ;;
                broadcast) args=(broadcast --subscribers "$SUBSCRIBERS" --rate "$RATE") ;;
            esac
            # Redis counters cover the measured run only: from after the warm-up's connections
            # to the end of the drain.
            (
                sleep 4
                redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
                cpu_ticks "$redis_pid" >"$WORK/$name.cpu0"
            ) &
            taskset -c 1 "$BIN/quicksilver-loadtest" "${args[@]}" --sub-url "$url" --pub-url "$url" \
                --payload-bytes 200 --warmup 3 --duration "$DURATION" --jwt-key "$KEY" \
                --tolerate-errors --quiet --json-out "$WORK/$name.json" >"$WORK/$name.txt" 2>&1 || true
            wait
            cpu=$(( $(cpu_ticks "$redis_pid") - $(cat "$WORK/$name.cpu0") ))
            xadd=$(cmdstat "$REDIS_PORT" xadd calls)
            xread=$(cmdstat "$REDIS_PORT" xread calls)
            xread_usec=$(cmdstat "$REDIS_PORT" xread usec)
            lost=$(jq -r '(.delivery.lost + .delivery.duplicated + .delivery.out_of_order) | tostring' \
                "$WORK/$name.json" 2>/dev/null || echo "run failed")
            deliveries=$(jq -r '.delivery.deliveries | tostring' "$WORK/$name.json" 2>/dev/null || echo "-")
            clients=$(redis-cli -p "$REDIS_PORT" info clients | tr -d '\r' |
                sed -n 's/^connected_clients://p')
            read_partitions=0
            for port in $NODE_PORTS; do
                p=$(curl -s "http://127.0.0.1:$port/metrics" |
                    sed -n 's/^quicksilver_transport_partitions_read \([0-9]*\).*/\1/p')
                read_partitions=$((read_partitions + ${p:-0}))
            done
            rows+=("$(awk -v s="$scenario" -v r="$ROUTING" -v n="$n" -v cpu="$cpu" -v t="$TICKS" \
                -v xadd="$xadd" -v xread="$xread" -v xus="$xread_usec" -v lost="$lost" \
                -v d="$deliveries" -v rp="$read_partitions" -v cl="${clients:-0}" 'BEGIN {
                    per = 0; calls = 0; usec = 0;
                    if (xadd > 0) { per = cpu / t * 1e6 / xadd; calls = xread / xadd; usec = xus / xadd }
                    printf "| %s | %s | %d | %d | %.0f | %.2f | %.1f | %d | %d | %s | %s |",
                        s, r, n, xadd, per, calls, usec, rp, cl, d, lost }')")
            "$ROOT/scripts/cluster.sh" down >/dev/null 2>&1 || true
        done
    done
done

mkdir -p "$(dirname "$OUT")"
{
    echo "# Redis work per update as nodes are added — $DATE"
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
    echo "$(uname -sr); load average when the run started: $LOAD_BEFORE. One redis-server on core 0;"
    echo "nodes (processes, --redis-partitions $PARTITIONS), nginx and the load generator on core 1."
    echo "collab: $DOCUMENTS documents × $EDITORS editors publishing $EDITOR_RATE private updates/s each;"
    echo "broadcast: $SUBSCRIBERS subscribers of one topic, $RATE updates/s. ${DURATION} s measured."
    echo
    echo "Command: \`NODES=\"$NODES\" DURATION=$DURATION PARTITIONS=$PARTITIONS loadtest/interest.sh\`"
    echo
    echo "| scenario | routing | nodes | updates | Redis CPU µs / update | XREAD calls / update | XREAD µs / update | partitions read (sum over nodes) | Redis connected clients | deliveries | lost + dup + out of order |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
} >"$OUT"
cat "$OUT"
echo "raw reports: $WORK" >&2
