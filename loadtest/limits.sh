#!/usr/bin/env bash
# What rate limits and connection caps cost. One hub node (memory transport, or Redis transport
# with its own redis-server), the load generator beside it; each case runs with no policy and with
# a rule that applies to every request but never refuses one, alternating, REPEAT times:
#
# - publish: `broadcast` to SUBSCRIBERS subscribers at RATE updates/s for DURATION seconds
#   (LANES publishing lanes), with and without a `[[rate_limit]]` rule; per acknowledged
#   publish: hub CPU, Redis CPU, the publish round trip (p50, p99), and Redis' own time per
#   EVALSHA and XADD (INFO commandstats).
# - connect: `connect-storm` of CONNECTIONS subscribers (closed when it ends), with and without a
#   `[[connection_limit]]` rule; per connection: hub CPU and Redis CPU (from before the storm to
#   a second after its connections closed, so the releases count), EVALSHA calls.
#
# CPU comes from /proc (utime + stime, in clock ticks). Writes loadtest/results/limits-<date>.md.
#
#   loadtest/limits.sh            # TRANSPORTS="memory redis" REPEAT=3 RATE=2000 DURATION=15
#                                 # SUBSCRIBERS=10 LANES=8 CONNECTIONS=5000
#
# Needs target/release/quicksilver and target/release/quicksilver-loadtest (or BIN=dir),
# redis-server, redis-cli, jq.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
TRANSPORTS=${TRANSPORTS:-memory redis}
REPEAT=${REPEAT:-3}
RATE=${RATE:-2000}
DURATION=${DURATION:-15}
SUBSCRIBERS=${SUBSCRIBERS:-10}
LANES=${LANES:-8}
CONNECTIONS=${CONNECTIONS:-5000}
KEY='!ChangeThisMercureHubJWTSecretKey!'
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-$ROOT/loadtest/results/limits-$DATE.md}
WORK=$(mktemp -d /tmp/qs-limits.XXXXXX)
TICKS=$(getconf CLK_TCK)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

cat >"$WORK/none.toml" <<'EOF'
EOF
cat >"$WORK/rate.toml" <<'EOF'
[[rate_limit]]
name = "bench"
rate = "1000000/s"
burst = 1000000
EOF
cat >"$WORK/connect.toml" <<'EOF'
[[connection_limit]]
name = "bench"
max_connections = 1000000
max_matchers = 1000000
EOF

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
cpu_ticks() { # utime + stime of a process
    awk '{print $14 + $15}' "/proc/$1/stat"
}
cmdstat() { # cmdstat <port> <command> <field>
    local value
    value=$(redis-cli -p "$1" info commandstats | tr -d '\r' | sed -n "s/^cmdstat_$2://p" |
        tr ',' '\n' | sed -n "s/^$3=//p")
    echo "${value:-0}"
}

HUB_PID=
REDIS_PID=
REDIS_PORT=
stop() {
    [[ -n $HUB_PID ]] && kill "$HUB_PID" 2>/dev/null && wait "$HUB_PID" 2>/dev/null || true
    [[ -n $REDIS_PID ]] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null || true
    HUB_PID= REDIS_PID=
}
trap 'stop; rm -rf "$WORK"' EXIT

# start <transport> <config>: a fresh hub (and Redis); sets HUB_PID, REDIS_PID, PORT.
start() {
    local transport=$1 config=$2
    PORT=$(free_port)
    local args=(--listen "127.0.0.1:$PORT" --jwt-key "$KEY" --anonymous --config "$config"
        --max-connections-per-client 0)
    if [[ $transport == redis ]]; then
        REDIS_PORT=$(free_port)
        redis-server --port "$REDIS_PORT" --save '' --appendonly no --dir "$WORK" \
            >"$WORK/redis.log" 2>&1 &
        REDIS_PID=$!
        until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
        args+=(--transport redis --redis-url "redis://127.0.0.1:$REDIS_PORT")
    fi
    "$BIN/quicksilver" "${args[@]}" >"$WORK/hub.log" 2>&1 &
    HUB_PID=$!
    until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.05; done
    [[ -n $REDIS_PID ]] && redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
    return 0
}

# publish_case <transport> <rules>: prints one result line (space-separated).
publish_case() {
    local transport=$1 rules=$2
    start "$transport" "$WORK/$rules.toml"
    local hub0 redis0=0 redis1=0
    hub0=$(cpu_ticks "$HUB_PID")
    [[ -n $REDIS_PID ]] && redis0=$(cpu_ticks "$REDIS_PID")
    "$BIN/quicksilver-loadtest" broadcast --sub-url "http://127.0.0.1:$PORT/.well-known/mercure" \
        --jwt-key "$KEY" --subscribers "$SUBSCRIBERS" --rate "$RATE" --publishers "$LANES" \
        --duration "$DURATION" --json-out "$WORK/run.json" -q >/dev/null 2>&1 || true
    local hub1 acked p50 p99 evalsha_calls=0 evalsha_usec=0 xadd_usec=0
    hub1=$(cpu_ticks "$HUB_PID")
    if [[ -n $REDIS_PID ]]; then
        redis1=$(cpu_ticks "$REDIS_PID")
        evalsha_calls=$(cmdstat "$REDIS_PORT" evalsha calls)
        evalsha_usec=$(cmdstat "$REDIS_PORT" evalsha usec_per_call)
        xadd_usec=$(cmdstat "$REDIS_PORT" xadd usec_per_call)
    fi
    acked=$(jq '.publish.acked' "$WORK/run.json")
    p50=$(jq '.publish.latency.p50_ms' "$WORK/run.json")
    p99=$(jq '.publish.latency.p99_ms' "$WORK/run.json")
    stop
    python3 - "$hub0" "$hub1" "$redis0" "$redis1" "$acked" "$p50" "$p99" "$evalsha_calls" \
        "$evalsha_usec" "$xadd_usec" "$TICKS" <<'EOF'
import sys
h0, h1, r0, r1, acked, p50, p99, calls, usec, xadd, ticks = sys.argv[1:]
acked = max(int(acked), 1)
us = lambda a, b: (int(b) - int(a)) / int(ticks) / acked * 1e6
print(f"{acked} {us(h0, h1):.1f} {us(r0, r1):.1f} {float(p50):.3f} {float(p99):.2f} {calls} {usec} {xadd}")
EOF
}

# connect_case <transport> <rules>: prints one result line.
connect_case() {
    local transport=$1 rules=$2
    start "$transport" "$WORK/$rules.toml"
    local hub0 redis0=0 redis1=0
    hub0=$(cpu_ticks "$HUB_PID")
    [[ -n $REDIS_PID ]] && redis0=$(cpu_ticks "$REDIS_PID")
    "$BIN/quicksilver-loadtest" connect-storm --sub-url "http://127.0.0.1:$PORT/.well-known/mercure" \
        --jwt-key "$KEY" --subscribers "$CONNECTIONS" --connect-rate 0 \
        --json-out "$WORK/run.json" -q >/dev/null 2>&1 || true
    # The connections are closed when the storm ends: let the releases go out.
    sleep 1
    local hub1 connected evalsha_calls=0 evalsha_usec=0
    hub1=$(cpu_ticks "$HUB_PID")
    if [[ -n $REDIS_PID ]]; then
        redis1=$(cpu_ticks "$REDIS_PID")
        evalsha_calls=$(cmdstat "$REDIS_PORT" evalsha calls)
        evalsha_usec=$(cmdstat "$REDIS_PORT" evalsha usec_per_call)
    fi
    connected=$(jq '.connect.connected // .connect.ok // 0' "$WORK/run.json")
    stop
    python3 - "$hub0" "$hub1" "$redis0" "$redis1" "$connected" "$evalsha_calls" "$evalsha_usec" \
        "$TICKS" <<'EOF'
import sys
h0, h1, r0, r1, n, calls, usec, ticks = sys.argv[1:]
n = max(int(n), 1)
us = lambda a, b: (int(b) - int(a)) / int(ticks) / n * 1e6
print(f"{n} {us(h0, h1):.1f} {us(r0, r1):.1f} {calls} {usec}")
EOF
}

{
    echo "# Rate limits and caps: cost ($DATE)"
    echo
    echo "Machine: $(nproc) cores, load average before: $LOAD_BEFORE. Each row: one run, rules"
    echo "alternating. CPU per operation from /proc (utime + stime)."
    echo
    echo "## Publish ($SUBSCRIBERS subscribers, $RATE updates/s, ${DURATION}s, $LANES lanes)"
    echo
    echo "| transport | rule | acked | hub CPU µs/publish | Redis CPU µs/publish | round trip p50 ms | p99 ms | EVALSHA calls | EVALSHA µs/call | XADD µs/call |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
} >"$OUT"
for transport in $TRANSPORTS; do
    for i in $(seq "$REPEAT"); do
        for rules in none rate; do
            echo "== publish $transport $rules #$i" >&2
            read -r acked hub redis p50 p99 calls usec xadd < <(publish_case "$transport" "$rules")
            echo "| $transport | $rules | $acked | $hub | $redis | $p50 | $p99 | $calls | $usec | $xadd |" >>"$OUT"
        done
    done
done
{
    echo
    echo "## Connect ($CONNECTIONS subscribers, unpaced, then closed)"
    echo
    echo "| transport | rule | connected | hub CPU µs/connection | Redis CPU µs/connection | EVALSHA calls | EVALSHA µs/call |"
    echo "|---|---|---|---|---|---|---|"
} >>"$OUT"
for transport in $TRANSPORTS; do
    for i in $(seq "$REPEAT"); do
        for rules in none connect; do
            echo "== connect $transport $rules #$i" >&2
            read -r n hub redis calls usec < <(connect_case "$transport" "$rules")
            echo "| $transport | $rules | $n | $hub | $redis | $calls | $usec |" >>"$OUT"
        done
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT"
cat "$OUT"
