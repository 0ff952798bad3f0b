#!/usr/bin/env bash
# Soak test: the loadtest `collab` scenario through nginx in front of a 3-node Quicksilver cluster
# (Redis transport) for a long time, restarting one node in turn every --restart-every seconds
# (SIGTERM, drain, start again on the same port; every --kill-every-th restart is a SIGKILL
# instead, a crash). Every 10 s it samples each node's RSS, open fds and /metrics gauges, and Redis
# used_memory, into CSV files.
#
#   scripts/soak.sh [--duration 3600] [--restart-every 600] [--kill-every 2] [--count N]
#                   [--out DIR] [--documents 50] [--editors 3] [--editor-rate 1]
#
# --count stops after N restarts (or rolling updates) even if the run goes on.
#
# With --rollout, every --restart-every seconds it performs a rolling update of the 3 nodes the
# way a Kubernetes Deployment does (maxUnavailable 0), instead of restarting one node in place:
# up to --max-surge new nodes start on fresh ports and join nginx's upstream once ready; each that
# stays ready --min-ready seconds lets one old node go, which leaves the upstream at once (a pod
# turning Terminating leaves the Service's endpoints), gets SIGTERM --pre-stop seconds later (the
# preStop sleep), drains over --drain-window seconds and is killed if still running --grace
# seconds after it started to stop. A new node counts as ready --startup seconds (± half of it,
# at random) after it was started, at the earliest: a pod's scheduling, image pull and probe
# periods, which a process on this machine does not have. Defaults follow the chart's defaults:
#
#   scripts/soak.sh --rollout [--max-surge 3] [--min-ready PRE_STOP+DRAIN] [--pre-stop 10]
#                   [--drain-window 30] [--grace PRE_STOP+DRAIN+20] [--startup 10]
#
# It fails (exit 1, "SOAK FAILED") on any lost, duplicated or out-of-order update in the
# harness's accounting, or on memory growth that does not plateau (see scripts/soak-report.py
# for the exact rule); with --rollout and --max-surge 3 (every pod replaced at once), also when a
# subscriber reconnected more than once per rolling update. The output directory (default
# loadtest/results/soak-<UTC date>/) receives samples.csv, redis.csv, events.csv, loadtest.json,
# rss.svg and summary.md.
#
# Ports: SOAK_PORT_BASE (default 18480): nginx on BASE, nodes on BASE+1..3 (rolling updates:
# BASE+1..6), Redis on BASE+10 —
# away from the defaults of scripts/cluster.sh and the dev hub, so a soak can run beside them.
# Binaries: QUICKSILVER_BIN and LOADTEST_BIN (default target/release/…, built when missing).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

duration=3600
restart_every=600
kill_every=2
documents=50
editors=3
editor_rate=1
out=""
count=0
rollout=false
max_surge=3
min_ready=""
pre_stop=10
drain=30
startup=10
grace=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --count) count="$2"; shift 2 ;;
        --rollout) rollout=true; shift ;;
        --max-surge) max_surge="$2"; shift 2 ;;
        --min-ready) min_ready="$2"; shift 2 ;;
        --pre-stop) pre_stop="$2"; shift 2 ;;
        --drain-window) drain="$2"; shift 2 ;;
        --grace) grace="$2"; shift 2 ;;
        --startup) startup="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --restart-every) restart_every="$2"; shift 2 ;;
        --kill-every) kill_every="$2"; shift 2 ;;
        --documents) documents="$2"; shift 2 ;;
        --editors) editors="$2"; shift 2 ;;
        --editor-rate) editor_rate="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "soak: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
min_ready="${min_ready:-$((pre_stop + drain))}"
grace="${grace:-$((pre_stop + drain + 20))}"
for n in "$duration" "$restart_every" "$kill_every" "$max_surge" "$drain" "$grace"; do
    [[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || { echo "soak: durations and counts are positive whole numbers" >&2; exit 2; }
done
for n in "$min_ready" "$pre_stop" "$count" "$startup"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "soak: --min-ready, --pre-stop, --count and --startup are whole numbers" >&2; exit 2; }
done
((max_surge <= 3)) || { echo "soak: --max-surge is at most 3 (the cluster has 3 nodes)" >&2; exit 2; }

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="${out:-$repo_root/loadtest/results/soak-$(date -u +%Y-%m-%d)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

base="${SOAK_PORT_BASE:-18480}"
nginx_port=$base
node_ports=($((base + 1)) $((base + 2)) $((base + 3)))
# A rolling update starts new nodes on ports of their own, as new pods get addresses of their own.
pool_ports=($((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)) $((base + 5)) $((base + 6)))
redis_port=$((base + 10))
jwt_key="${MERCURE_JWT_KEY:-soak-$stamp-hmac-key-0123456789abcdef}"
hub_bin="${QUICKSILVER_BIN:-$repo_root/target/release/quicksilver}"
lt_bin="${LOADTEST_BIN:-$repo_root/target/release/quicksilver-loadtest}"
sample_every=10
drain_timeout=30
# How long a SIGTERMed node may take to drain and exit before it is killed: its drain window
# (30 s by default) plus a margin.
term_grace=60

# cluster.sh reads its settings from the environment; a private directory keeps this run's pid
# files and logs away from any other cluster on the machine.
export CLUSTER_DIR="$repo_root/.tmp/soak-$stamp"
export NGINX_PORT=$nginx_port NODE_PORTS="${node_ports[*]}" REDIS_PORT=$redis_port
export MERCURE_JWT_KEY="$jwt_key"
dir="$CLUSTER_DIR"

log() { echo "soak $(date -u +%H:%M:%S): $*"; }

sampled_ports=("${node_ports[@]}")
if $rollout; then
    sampled_ports=("${pool_ports[@]}")
    # Every node drains over the rolling update's window (the initial ones too).
    export QUICKSILVER_EXTRA_ARGS="${QUICKSILVER_EXTRA_ARGS:-} --drain-window ${drain}s"
    term_grace=$grace
fi

for port in "$nginx_port" "${sampled_ports[@]}" "$redis_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "soak: port $port is already in use; set SOAK_PORT_BASE" >&2
        exit 2
    fi
done

if [[ ! -x "$hub_bin" || ! -x "$lt_bin" ]]; then
    (cd "$repo_root" && cargo build --release -p quicksilver-server -p quicksilver-loadtest)
fi
# Run private copies: a rebuild during the hour must not change the binary a restarted node runs.
mkdir -p "$dir/bin"
cp "$hub_bin" "$dir/bin/quicksilver"
cp "$lt_bin" "$dir/bin/quicksilver-loadtest"
hub_bin="$dir/bin/quicksilver" lt_bin="$dir/bin/quicksilver-loadtest"
export QUICKSILVER_BIN="$hub_bin"

# Everything started here is stopped on any exit: the sampler, the harness, and the cluster
# (cluster.sh down stops whatever the pid files name, including restarted nodes).
sampler_pid=""
loadtest_pid=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n "$sampler_pid" ]] && kill "$sampler_pid" 2>/dev/null || true
    [[ -n "$loadtest_pid" ]] && kill "$loadtest_pid" 2>/dev/null || true
    "$repo_root/scripts/cluster.sh" down >/dev/null 2>&1 || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "cluster in $dir: nginx $nginx_port, nodes ${node_ports[*]}, redis $redis_port"
"$repo_root/scripts/cluster.sh" up

node_pid() { cat "$dir/node-$1.pid" 2>/dev/null || echo 0; }

# The same command line cluster.sh uses, appending to the node's log so one file covers all its
# lifetimes.
spawn_node() {
    local port="$1"
    "$hub_bin" --listen "127.0.0.1:$port" --transport redis --redis-url "redis://127.0.0.1:$redis_port" \
        ${QUICKSILVER_EXTRA_ARGS:-} >>"$dir/node-$port.log" 2>&1 &
    echo $! >"$dir/node-$port.pid"
}

start_node() {
    local port="$1"
    spawn_node "$port"
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "node $port did not become ready in 30 s after restart"
    return 1
}

# restart_node <port> TERM|KILL: stop the node (a TERM drains it first) and start it again on
# the same port. Appends the event to events.csv.
restart_node() {
    local port="$1" sig="$2" old new began
    old=$(node_pid "$port")
    began=$(date +%s.%N)
    echo "$began,$port,stop-$sig,$old" >>"$out/events.csv"
    kill "-$sig" "$old" 2>/dev/null || true
    local waited=0
    while kill -0 "$old" 2>/dev/null && ((waited < term_grace * 10)); do
        sleep 0.1; waited=$((waited + 1))
    done
    if kill -0 "$old" 2>/dev/null; then
        log "node $port (pid $old) still running ${term_grace}s after SIG$sig; killing it"
        echo "$(date +%s.%N),$port,forced-kill,$old" >>"$out/events.csv"
        kill -KILL "$old" 2>/dev/null || true
        sleep 0.5
    fi
    start_node "$port"
    new=$(node_pid "$port")
    echo "$(date +%s.%N),$port,started,$new" >>"$out/events.csv"
    log "node $port restarted (SIG$sig, pid $old -> $new, $(awk -v a="$began" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s)"
}

event() { echo "$(date +%s.%N),$1,$2,$3" >>"$out/events.csv"; }
now_ms() { date +%s%3N; }
is_ready() { curl -sf --max-time 1 "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; }

# rolling_update: replaces the nodes on $live_ports by new ones, as a Deployment with
# maxUnavailable 0, maxSurge $max_surge and minReadySeconds $min_ready does (see the header).
# nginx's upstream plays the Service's endpoints: ready nodes that are not stopping.
live_ports=("${node_ports[@]}")
rolling_update() {
    local desired=${#live_ports[@]}
    local -a old=("${live_ports[@]}") new=() stopping=()
    local -A ready_at=() term_at=() kill_at=() signalled=() pid_of=() ready_after=()
    local endpoints="" t port
    log "rolling update: maxSurge $max_surge, minReadySeconds $min_ready, preStop ${pre_stop}s, drain ${drain}s, grace ${grace}s, startup ${startup}s"
    event all rollout-start "${old[*]}"
    while :; do
        t=$(now_ms)
        # New pods, as many as the surge allows; terminating pods do not count.
        while ((${#old[@]} + ${#new[@]} < desired + max_surge && ${#new[@]} < desired)); do
            port=""
            for p in "${pool_ports[@]}"; do
                [[ " ${old[*]} ${new[*]} ${stopping[*]} " == *" $p "* ]] || { port=$p; break; }
            done
            spawn_node "$port"
            new+=("$port")
            # Startup S ± S/2, in milliseconds.
            ready_after[$port]=$((t + startup * 500 + RANDOM % (startup * 1000 + 1)))
            event "$port" started "$(node_pid "$port")"
        done
        # Readiness of the new pods.
        for port in "${new[@]}"; do
            if [[ -z "${ready_at[$port]:-}" ]] && ((t >= ready_after[$port])) && is_ready "$port"; then
                ready_at[$port]=$t
                event "$port" ready "$(node_pid "$port")"
            fi
        done
        # Old pods go as new ones become available (ready for minReadySeconds).
        local available=0
        for port in "${new[@]}"; do
            [[ -n "${ready_at[$port]:-}" ]] && ((t - ready_at[$port] >= min_ready * 1000)) && available=$((available + 1))
        done
        while ((${#old[@]} > 0 && ${#old[@]} + available > desired)); do
            port=${old[0]}
            old=("${old[@]:1}")
            stopping+=("$port")
            pid_of[$port]=$(node_pid "$port")
            term_at[$port]=$((t + pre_stop * 1000))
            kill_at[$port]=$((t + grace * 1000))
            event "$port" terminating "${pid_of[$port]}"
        done
        # The endpoints: ready new pods and the old pods not stopping.
        local want="${old[*]}"
        for port in "${new[@]}"; do [[ -n "${ready_at[$port]:-}" ]] && want+=" $port"; done
        want=$(echo $want)
        if [[ "$want" != "$endpoints" && -n "$want" ]]; then
            "$repo_root/scripts/cluster.sh" upstream $want >/dev/null
            endpoints=$want
            event all endpoints "$want"
        fi
        # Stopping pods: SIGTERM after the preStop sleep, SIGKILL at the end of the grace period.
        local -a still=()
        for port in "${stopping[@]}"; do
            local pid=${pid_of[$port]}
            if ! kill -0 "$pid" 2>/dev/null; then
                event "$port" exited "$pid"
                continue
            fi
            if [[ -z "${signalled[$port]:-}" ]] && ((t >= term_at[$port])); then
                kill -TERM "$pid" 2>/dev/null || true
                signalled[$port]=1
                event "$port" stop-TERM "$pid"
            elif ((t >= kill_at[$port])); then
                kill -KILL "$pid" 2>/dev/null || true
                event "$port" forced-kill "$pid"
            fi
            still+=("$port")
        done
        stopping=("${still[@]}")
        if ((${#old[@]} == 0 && ${#stopping[@]} == 0 && available == desired)); then
            break
        fi
        sleep 0.2
    done
    live_ports=("${new[@]}")
    event all rollout-end "${live_ports[*]}"
    log "rolling update done: nodes ${live_ports[*]}"
}

# One gauge from a node's /metrics, summed over its label sets; empty when unreachable.
metric() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF; f = 1 } END { if (f) print s }' <<<"$2"; }

# Samples every $sample_every s until killed (or, as a safety net, well past the run's end).
sampler() {
    local limit=$(((duration + drain_timeout + term_grace + 120) / sample_every + 1))
    for _ in $(seq 1 "$limit"); do
        local now; now=$(date +%s.%N)
        for port in "${sampled_ports[@]}"; do
            local pid rss="" fds="" m subs conns
            pid=$(node_pid "$port")
            # A port no node has used yet (rolling updates): nothing to sample.
            [[ "$pid" == 0 ]] && continue
            if [[ -r "/proc/$pid/status" ]]; then
                rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
                fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l || true)
            fi
            m=$(curl -s --max-time 2 "http://127.0.0.1:$port/metrics" 2>/dev/null || true)
            subs=$(metric quicksilver_subscribers "$m")
            conns=$(metric quicksilver_connections "$m")
            echo "$now,$port,$pid,$rss,$fds,$subs,$conns" >>"$out/samples.csv"
        done
        local used rss_redis
        used=$(redis-cli -p "$redis_port" info memory 2>/dev/null | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }' || true)
        rss_redis=$(redis-cli -p "$redis_port" info memory 2>/dev/null | tr -d '\r' | awk -F: '$1 == "used_memory_rss" { print $2 }' || true)
        echo "$now,$used,$rss_redis" >>"$out/redis.csv"
        sleep "$sample_every"
    done
}

echo "unix_s,port,pid,rss_kib,fds,subscribers,connections" >"$out/samples.csv"
echo "unix_s,used_memory,used_memory_rss" >"$out/redis.csv"
echo "unix_s,port,event,pid" >"$out/events.csv"
for port in "${node_ports[@]}"; do echo "$(date +%s.%N),$port,started,$(node_pid "$port")" >>"$out/events.csv"; done
sampler &
sampler_pid=$!

# The harness: every subscriber and every publishing lane goes through nginx, so a subscriber
# whose node goes away reconnects (with Last-Event-ID) to whichever node nginx picks. Publish
# errors around a SIGKILL are expected (a request in flight on the dead node), so they do not
# fail the harness; loss is judged from its accounting below.
subscribers=$((documents * editors))
log "loadtest collab: $documents documents x $editors editors at $editor_rate updates/s each for ${duration}s"
"$lt_bin" collab --sub-url "http://127.0.0.1:$nginx_port/.well-known/mercure" \
    --documents "$documents" --editors "$editors" --editor-rate "$editor_rate" \
    --jwt-key "$jwt_key" --duration "$duration" --drain-timeout "${drain_timeout}s" \
    --connect-rate 200 --tolerate-errors --quiet \
    --json-out "$out/loadtest.json" >"$out/loadtest.txt" 2>"$dir/loadtest.err" &
loadtest_pid=$!
echo "$(date +%s.%N),all,loadtest-start,$loadtest_pid" >>"$out/events.csv"

# Restart one node in turn at every multiple of --restart-every inside the run. The connect phase
# (paced at 200/s) delays the publishing start by ~$((subscribers / 200 + 1)) s; restarts are
# timed from the harness start, which is close enough.
start=$(date +%s)
i=1
while ((i * restart_every < duration)) && ((count == 0 || i <= count)); do
    target=$((start + i * restart_every))
    while (($(date +%s) < target)) && kill -0 "$loadtest_pid" 2>/dev/null; do sleep 1; done
    kill -0 "$loadtest_pid" 2>/dev/null || { log "the harness ended early"; break; }
    if $rollout; then
        rolling_update
    else
        port=${node_ports[$(((i - 1) % 3))]}
        sig=TERM
        ((i % kill_every == 0)) && sig=KILL
        restart_node "$port" "$sig"
    fi
    i=$((i + 1))
done
rollouts=0
$rollout && rollouts=$((i - 1))

lt_rc=0
wait "$loadtest_pid" || lt_rc=$?
loadtest_pid=""
echo "$(date +%s.%N),all,loadtest-end,$lt_rc" >>"$out/events.csv"
log "harness exited with $lt_rc"
# Two more samples after the harness ends (connections closed), then stop sampling.
sleep $((2 * sample_every))
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""
cp "$dir/loadtest.err" "$out/loadtest-stderr.txt" 2>/dev/null || true

report_rc=0
report_args=(--harness-exit "$lt_rc" --duration "$duration" --restart-every "$restart_every")
if $rollout; then
    report_args+=(--rollouts "$rollouts" --rollout-settings
        "maxSurge $max_surge, minReadySeconds $min_ready, preStop ${pre_stop}s, drain window ${drain}s, grace ${grace}s, startup ${startup}±$((startup / 2))s")
    # Every pod replaced at once: each client must move once per rolling update.
    ((max_surge >= 3)) && report_args+=(--max-reconnects "$rollouts")
fi
python3 "$repo_root/scripts/soak-report.py" "$out" "${report_args[@]}" || report_rc=$?
if ((report_rc != 0)); then
    echo "SOAK FAILED — see $out/summary.md (cluster logs in $dir)" >&2
    exit 1
fi
log "soak passed — $out/summary.md, chart $out/rss.svg"
