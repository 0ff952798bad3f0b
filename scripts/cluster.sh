#!/usr/bin/env bash
# Runs a Quicksilver cluster on this machine with processes only: one Redis (or a 3-master Redis
# Cluster with --redis-cluster), three hub nodes, and nginx load-balancing them with the location
# block operators use for Mercure.
#
#   scripts/cluster.sh up [--redis-cluster]   # build, start everything, print the URLs
#   scripts/cluster.sh status                 # what runs, and each node's /readyz
#   scripts/cluster.sh down                   # stop everything started by `up`
#   scripts/cluster.sh upstream PORT...       # route nginx to these node ports only (reload)
#
# Ports (override with environment variables): nginx NGINX_PORT=8080, nodes NODE_PORTS="3001 3002
# 3003", Redis REDIS_PORT=6391 (cluster: REDIS_PORT, +1, +2). State, logs and pid files live in
# CLUSTER_DIR (default .tmp/cluster). The JWT key is MERCURE_JWT_KEY (default: the demo key).
# NGINX_WORKERS (default 1): nginx worker processes; each proxied subscriber takes two of a
# worker's file descriptors, so more than ~9,000 subscribers through nginx need several.
# ROUTING (default topic): `topic` routes each subscription by its first topic (consistent hash of
# the `topic` query parameter; requests without one spread at random), so a topic's subscribers
# gather on one node and each node reads few Redis partitions; `partition` routes by the same
# parameter with nginx's plain `hash` and starts the nodes with `--redis-partition-hash nginx`, so
# every topic of a partition goes to one node and each partition is read by one node (PARTITIONS
# must then be a multiple of the nodes); `round-robin` spreads every request.
# PARTITIONS: --redis-partitions of the nodes (default 1; 6 with --redis-cluster; 4 per node with
# ROUTING=partition).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${CLUSTER_DIR:-$repo_root/.tmp/cluster}"
nginx_port="${NGINX_PORT:-8080}"
read -r -a node_ports <<<"${NODE_PORTS:-3001 3002 3003}"
redis_port="${REDIS_PORT:-6391}"
jwt_key="${MERCURE_JWT_KEY:-!ChangeThisMercureHubJWTSecretKey!}"
bin="${QUICKSILVER_BIN:-$repo_root/target/release/quicksilver}"

wait_for() { # wait_for <description> <command...>: retry for 10 s
    local what="$1"; shift
    for _ in $(seq 1 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "cluster: $what did not come up (logs in $dir)" >&2
    return 1
}

start_redis() { # start_redis <port> [extra args]: a redis-server daemon with its files in $dir
    local port="$1"; shift
    mkdir -p "$dir/redis-$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/redis-$port" --daemonize yes \
        --pidfile "$dir/redis-$port.pid" --logfile "$dir/redis-$port.log" \
        --appendonly yes --save '' "$@"
    wait_for "redis on $port" redis-cli -p "$port" ping
}

up() {
    local cluster=false
    [[ "${1:-}" == "--redis-cluster" ]] && cluster=true
    mkdir -p "$dir"
    # QUICKSILVER_BIN names a binary to use as it is; otherwise build (a no-op when up to date).
    if [[ -z "${QUICKSILVER_BIN:-}" ]]; then
        (cd "$repo_root" && cargo build --release --bin quicksilver)
    fi

    local redis_args=(--transport redis)
    if $cluster; then
        local ports=("$redis_port" $((redis_port + 1)) $((redis_port + 2)))
        for p in "${ports[@]}"; do
            start_redis "$p" --cluster-enabled yes --cluster-config-file "$dir/redis-$p/nodes.conf"
        done
        redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >"$dir/redis-cluster-create.log"
        wait_for "redis cluster" bash -c "redis-cli -p $redis_port cluster info | grep -q cluster_state:ok"
        local urls
        urls=$(printf 'redis://127.0.0.1:%s,' "${ports[@]}")
        redis_args+=(--redis-cluster --redis-url "${urls%,}")
    else
        start_redis "$redis_port"
        redis_args+=(--redis-url "redis://127.0.0.1:$redis_port")
    fi

    local balance partitions=1
    $cluster && partitions=6
    case "${ROUTING:-topic}" in
        topic) balance='hash $mercure_route consistent;' ;;
        partition)
            balance='hash $mercure_route;'
            $cluster || partitions=$((4 * ${#node_ports[@]}))
            redis_args+=(--redis-partition-hash nginx)
            ;;
        round-robin) balance='# round-robin' ;;
        *) echo "cluster: ROUTING must be topic, partition or round-robin" >&2; exit 2 ;;
    esac
    partitions="${PARTITIONS:-$partitions}"
    if [[ "${ROUTING:-topic}" == partition ]] && ((partitions % ${#node_ports[@]} != 0)); then
        echo "cluster: with ROUTING=partition, PARTITIONS must be a multiple of the nodes" >&2
        exit 2
    fi
    redis_args+=(--redis-partitions "$partitions")

    for port in "${node_ports[@]}"; do
        # nginx on this machine is the proxy whose X-Forwarded-* headers the nodes believe.
        MERCURE_JWT_KEY="$jwt_key" "$bin" --listen "127.0.0.1:$port" "${redis_args[@]}" \
            --trusted-proxies 127.0.0.1 ${QUICKSILVER_EXTRA_ARGS:-} >"$dir/node-$port.log" 2>&1 &
        echo $! >"$dir/node-$port.pid"
    done
    for port in "${node_ports[@]}"; do
        wait_for "node on $port" curl -sf "http://127.0.0.1:$port/readyz"
    done
    write_upstream "${node_ports[@]}"

    cat >"$dir/nginx.conf" <<CONF
worker_processes ${NGINX_WORKERS:-1};
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 16384; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $dir/nginx-tmp;
    proxy_temp_path $dir/nginx-tmp;
    # Topic-affine routing (ROUTING=topic), routing by partition (ROUTING=partition): see
    # deploy/nginx/compose.conf.
    map \$arg_topic \$mercure_route {
        ""      \$request_id;
        default \$arg_topic;
    }
    upstream quicksilver {
        $balance
        # The nodes' ports; "cluster.sh upstream" rewrites this file and reloads.
        include $dir/upstream.conf;
        keepalive 64;
    }
    server {
        # A reconnection storm overflows nginx's default backlog (511); dropped SYNs wait 1-7 s.
        listen 127.0.0.1:$nginx_port backlog=16384;
        include $repo_root/deploy/nginx/mercure.conf;
        # A development cluster: the debug page and the nodes' health through nginx as well
        # (mercure.conf, the production location block, routes only the hub's public paths).
        location = / {
            proxy_pass http://quicksilver;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location = /healthz {
            proxy_pass http://quicksilver;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
    mkdir -p "$dir/nginx-tmp"
    nginx -c "$dir/nginx.conf" -p "$dir"
    wait_for "nginx on $nginx_port" curl -sf "http://127.0.0.1:$nginx_port/healthz"
    echo "cluster up: hub http://127.0.0.1:$nginx_port/.well-known/mercure (nodes ${node_ports[*]}, logs in $dir)"
}

# write_upstream <port...>: the nginx upstream servers, one per node port.
write_upstream() {
    local port
    : >"$dir/upstream.conf.new"
    for port in "$@"; do
        echo "server 127.0.0.1:$port max_fails=1 fail_timeout=5s;" >>"$dir/upstream.conf.new"
    done
    mv "$dir/upstream.conf.new" "$dir/upstream.conf"
}

# upstream <port...>: routes new requests to these nodes only, as a Service's endpoints change
# when pods turn ready or start terminating. nginx reloads gracefully: open streams stay on the
# old workers until they end.
upstream() {
    (($# > 0)) || { echo "usage: $0 upstream PORT..." >&2; exit 2; }
    write_upstream "$@"
    nginx -c "$dir/nginx.conf" -p "$dir" -s reload 2>>"$dir/nginx-error.log"
}

stop_pidfile() {
    local file="$1"
    [[ -f "$file" ]] || return 0
    local pid; pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

down() {
    [[ -d "$dir" ]] || { echo "cluster: nothing to stop"; return 0; }
    stop_pidfile "$dir/nginx.pid"
    for f in "$dir"/node-*.pid "$dir"/redis-*.pid; do
        [[ -e "$f" ]] && stop_pidfile "$f"
    done
    echo "cluster down"
}

status() {
    for f in "$dir"/*.pid; do
        [[ -e "$f" ]] || continue
        local name; name=$(basename "$f" .pid)
        if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$name: running"; else echo "$name: dead"; fi
    done
    for port in "${node_ports[@]}"; do
        printf 'node %s readyz: %s\n' "$port" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)"
    done
}

case "${1:-}" in
    up) shift; up "$@" ;;
    down) down ;;
    status) status ;;
    upstream) shift; upstream "$@" ;;
    *) echo "usage: $0 up [--redis-cluster] | status | down | upstream PORT..." >&2; exit 2 ;;
esac
