#!/usr/bin/env bash
# The cluster measurements: 3 Quicksilver nodes + Redis + nginx (scripts/cluster.sh, all pinned to
# core 0), the load generator on core 1. Writes loadtest/results/cluster-<date>.md.
#
#   1. cross-node: broadcast, 1,000 subscribers × 100 updates/s of 200 B, published to node 1 while
#      every subscriber is on node 2 or 3, so every delivery crosses Redis;
#   2. the same through nginx (publishes and subscriptions load-balanced);
#   3. resume-storm: 10,000 subscribers through nginx, 10 updates/s; every connection is dropped at
#      once and everyone resumes with Last-Event-ID through nginx; time until all caught up.
#
#   loadtest/cluster-targets.sh            # DURATION=10 (seconds measured per broadcast run),
#                                          # RESUME_SUBS=10000 RESUME_RATE=10 (updates/s)
#
# Needs target/release/quicksilver and target/release/quicksilver-loadtest, redis-server, nginx, jq.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
DURATION=${DURATION:-10}
RESUME_SUBS=${RESUME_SUBS:-10000}
RESUME_RATE=${RESUME_RATE:-10}
KEY='!ChangeThisMercureHubJWTSecretKey!'
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-$ROOT/loadtest/results/cluster-$DATE.md}
WORK=$(mktemp -d /tmp/qs-cluster-targets.XXXXXX)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
export CLUSTER_DIR="$WORK/cluster" QUICKSILVER_BIN="$BIN/quicksilver" MERCURE_JWT_KEY="$KEY"
export NGINX_PORT REDIS_PORT NODE_PORTS NGINX_WORKERS=3
NGINX_PORT=$(free_port); REDIS_PORT=$(free_port)
NODE_PORTS="$(free_port) $(free_port) $(free_port)"
read -r -a nodes <<<"$NODE_PORTS"
trap '"$ROOT/scripts/cluster.sh" down >/dev/null 2>&1 || true' EXIT
taskset -c 0 "$ROOT/scripts/cluster.sh" up >"$WORK/cluster-up.log"

url() { echo "http://127.0.0.1:$1/.well-known/mercure"; }
server_pids() { # every node, Redis and nginx's workers, for CPU accounting
    local args=()
    for f in "$CLUSTER_DIR"/node-*.pid "$CLUSTER_DIR"/redis-*.pid; do args+=(--hub-pid "$(cat "$f")"); done
    for w in $(pgrep -P "$(cat "$CLUSTER_DIR/nginx.pid")"); do args+=(--hub-pid "$w"); done
    echo "${args[@]}"
}

run() { # run <name> <loadtest args...>
    local name=$1; shift
    echo "== $name" >&2
    # shellcheck disable=SC2046
    taskset -c 1 "$BIN/quicksilver-loadtest" "$@" --jwt-key "$KEY" $(server_pids) \
        --tolerate-errors --quiet --json-out "$WORK/$name.json" >"$WORK/$name.txt" 2>&1 || true
}

run cross-node broadcast --subscribers 1000 --rate 100 --payload-bytes 200 \
    --duration "$DURATION" --warmup 2 --pub-url "$(url "${nodes[0]}")" \
    --sub-url "$(url "${nodes[1]}")" --sub-url "$(url "${nodes[2]}")"
run through-nginx broadcast --subscribers 1000 --rate 100 --payload-bytes 200 \
    --duration "$DURATION" --warmup 2 --pub-url "$(url "$NGINX_PORT")" --sub-url "$(url "$NGINX_PORT")"
run resume-storm resume-storm --subscribers "$RESUME_SUBS" --rate "$RESUME_RATE" --payload-bytes 200 \
    --duration 20 --warmup 2 --disconnect-after 8 --connect-rate 4000 --processes 2 \
    --source-ips 127.0.0.1,127.0.0.2 --pub-url "$(url "${nodes[0]}")" \
    --sub-url "$(url "$NGINX_PORT")" --resume-url "$(url "$NGINX_PORT")" --drain-timeout 30s

row() { # row <name> <label>
    local json="$WORK/$1.json"
    if [ -s "$json" ]; then
        jq -r --arg run_name "$2" '
            [$run_name,
             (.delivery.deliveries | tostring),
             (.delivery.lost | tostring),
             (.delivery.latency.p50_ms * 100 | round / 100 | tostring),
             (.delivery.latency.p99_ms * 100 | round / 100 | tostring),
             (.delivery.latency.max_ms * 100 | round / 100 | tostring),
             (if .resume then (.resume.time_until_all_caught_up_s * 100 | round / 100 | tostring)
                 + " s (" + (.resume.caught_up | tostring) + " caught up, "
                 + (.resume.not_caught_up | tostring) + " not)" else "" end),
             ((.deliveries_per_hub_cpu_second // 0) | floor | tostring),
             (.harness.cpu_seconds * 100 | round / 100 | tostring)] | "| " + join(" | ") + " |"' "$json"
    else
        echo "| $2 | run failed, see $WORK/$1.txt | | | | | | | |"
    fi
}

mkdir -p "$(dirname "$OUT")"
{
    echo "# Quicksilver cluster on one machine — $DATE"
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
    echo "$(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr); load average when the run started: $LOAD_BEFORE."
    echo "3 nodes (Redis transport) + 1 redis-server + nginx (3 workers, deploy/nginx/mercure.conf), all on core 0;"
    echo "the load generator on core 1 (taskset). Server CPU = nodes + Redis + nginx workers."
    echo
    echo "Command: \`DURATION=$DURATION RESUME_SUBS=$RESUME_SUBS RESUME_RATE=$RESUME_RATE loadtest/cluster-targets.sh\`"
    echo
    echo "| run | deliveries | lost | p50 ms | p99 ms | max ms | resume: all caught up after | deliveries / server CPU-s | load-gen CPU s |"
    echo "|---|---:|---:|---:|---:|---:|---|---:|---:|"
    row cross-node "broadcast 1,000 × 100/s, publish on node 1, subscribers on nodes 2–3 (all cross-node)"
    row through-nginx "broadcast 1,000 × 100/s, publish and subscribe through nginx"
    row resume-storm "resume-storm $RESUME_SUBS subscribers through nginx, $RESUME_RATE/s, all connections dropped at 8 s"
} >"$OUT"
cat "$OUT"
echo "raw reports: $WORK" >&2
