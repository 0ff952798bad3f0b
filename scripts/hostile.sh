#!/usr/bin/env bash
# Runs every hostile-client attack at full scale against one node (release build, in-memory
# transport, on this machine's loopback) while a normal subscriber measures its latency, and writes
# a Markdown table: attack, scale, the node's peak RSS and file descriptors, the normal subscriber's
# p50/p99 idle and during the attack, updates it lost (must be 0), and what the hub answered.
#
#   scripts/hostile.sh [--connections 19000] [--processes 4] [--hold 30] [--out FILE] [ATTACK…]
#
# Attacks: methods h2-idle over-limit templates stalled-resume pipelining silent (default: all).
# Each attack gets a fresh node; the hostile connections are spread over --processes processes
# (one process may hold at most its open-file limit), each connecting from its own loopback address.
# Needs: cargo, curl, python3 (to pick free ports). Builds target/release/quicksilver and quicksilver-hostile.
set -euo pipefail

connections=19000
processes=4
hold=30
out=""
attacks=()
while [ $# -gt 0 ]; do
    case "$1" in
        --connections) connections="$2"; shift 2 ;;
        --processes) processes="$2"; shift 2 ;;
        --hold) hold="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) attacks+=("$1"); shift ;;
    esac
done
[ ${#attacks[@]} -gt 0 ] || attacks=(methods h2-idle over-limit templates stalled-resume pipelining silent)

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo_root"
target="${CARGO_TARGET_DIR:-$repo_root/target}"
cargo build --release -q -p quicksilver-server -p quicksilver-loadtest
hub_bin="$target/release/quicksilver"
hostile_bin="$target/release/quicksilver-hostile"
key='!ChangeThisMercureHubJWTSecretKey!'
work="$(mktemp -d)"
out="${out:-$work/hostile.md}"
ulimit -n "$(ulimit -Hn)"

hub_pid=""
cleanup() {
    [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null || true
}
trap cleanup EXIT

# Starts a node with the given flags; sets hub_pid and hub_addr.
start_hub() {
    # Metrics are read on their own listener, which answers while the main one is full.
    metrics_addr="127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$hub_bin" --listen 127.0.0.1:0 --metrics-addr "$metrics_addr" --jwt-key "$key" --anonymous \
        --log warn "$@" \
        >"$work/hub.out" 2>"$work/hub.err" &
    hub_pid=$!
    for _ in $(seq 1 100); do
        hub_addr="$(sed -n 's#^quicksilver listening on http://##p' "$work/hub.out")"
        [ -n "$hub_addr" ] && return 0
        sleep 0.1
    done
    echo "the hub did not start" >&2
    cat "$work/hub.err" >&2
    exit 1
}

stop_hub() {
    kill "$hub_pid" 2>/dev/null || true
    wait "$hub_pid" 2>/dev/null || true
    hub_pid=""
}

metric() {
    # awk reads to the end: leaving early would fail curl's write, and the pipeline with it.
    curl -s "http://$metrics_addr/metrics" | awk -v m="$1" '$1 == m { v = $2 } END { print v + 0 }'
}

# Samples the node's open file descriptors every half second into $work/fds until stopped.
sample_fds() {
    local max=0 n
    while kill -0 "$hub_pid" 2>/dev/null; do
        n=$(ls "/proc/$hub_pid/fd" 2>/dev/null | wc -l)
        [ "$n" -gt "$max" ] && max=$n && echo "$max" >"$work/fds"
        sleep 0.5
    done
}

json_field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }

# Sums field $2 over the attack processes' JSON lines in file $1.
sum_field() { sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" "$1" | awk '{ s += $1 } END { print s + 0 }'; }

echo "| attack | scale | node flags | peak RSS | peak fds | normal p50 / p99 idle | normal p50 / p99 under attack | lost | what the hostile clients got |" >"$out"
echo "|---|---|---|---|---|---|---|---|---|" >>"$out"

for attack in "${attacks[@]}"; do
    flags=()
    case "$attack" in
        methods) kind=methods ;;
        h2-idle) kind=h2-idle; flags=(--idle-timeout 10s) ;;
        over-limit) kind=subscribers; flags=(--max-connections 10000) ;;
        # 100 templates (about 1.9 MB compiled) are over the default share of one subscription
        # (413); a larger share leaves the node's budget as the bound.
        templates) kind=templates; flags=(--max-subscription-selector-memory 4194304) ;;
        stalled-resume) kind=stalled-resume; flags=(--dispatch-timeout 10s --history-size 600) ;;
        pipelining) kind=pipelining; flags=(--dispatch-timeout 10s) ;;
        silent) kind=silent; flags=(--header-read-timeout 10s) ;;
        *) echo "unknown attack $attack" >&2; exit 2 ;;
    esac
    start_hub ${flags[@]+"${flags[@]}"}
    echo "== $attack on $hub_addr (${flags[*]:-defaults})" >&2
    if [ "$kind" = stalled-resume ]; then
        # 3 MB of history for every resuming subscriber: 600 updates of 5 KB.
        token="$("$hostile_bin" token --jwt-key "$key")"
        data="$(head -c 5120 /dev/zero | tr '\0' x)"
        for i in $(seq 1 600); do
            curl -s -o /dev/null -X POST "http://$hub_addr/.well-known/mercure" \
                -H "Authorization: Bearer $token" --data-urlencode "topic=history" \
                --data-urlencode "data=$data"
        done
    fi
    idle="$("$hostile_bin" probe --addr "$hub_addr" --jwt-key "$key" --duration 10 || echo '{}')"
    rm -f "$work/fds" "$work/attack-"*
    sample_fds &
    sampler=$!
    # The normal subscriber connects before the attack and measures during it.
    "$hostile_bin" probe --addr "$hub_addr" --jwt-key "$key" --duration $(( hold - 4 )) \
        >"$work/during" 2>"$work/probe.err" &
    probe_pid=$!
    sleep 1
    per=$(( connections / processes ))
    pids=()
    for p in $(seq 1 "$processes"); do
        "$hostile_bin" attack --kind "$kind" --addr "$hub_addr" --connections "$per" \
            --hold "$hold" --first $(( (p - 1) * per )) --source "127.0.0.$(( 10 + p ))" \
            >"$work/attack-$p" 2>/dev/null &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || true; done
    wait "$probe_pid" || true
    during="$(cat "$work/during")"
    cat "$work"/attack-* >"$work/attack-all"
    rss_kb="$(awk '/^VmHWM:/ { print $2 }' "/proc/$hub_pid/status")"
    extra=""
    case "$attack" in
        methods) extra="; $(curl -s "http://$metrics_addr/metrics" | grep -c '^quicksilver_http_responses_total{') response series" ;;
        over-limit) extra="; refused_total $(metric quicksilver_connections_refused_total)" ;;
        h2-idle) extra="; idle-closed $(metric quicksilver_connections_idle_closed_total)" ;;
        templates) extra="; selector memory $(( $(metric quicksilver_selector_memory_bytes) / 1048576 )) MiB" ;;
        stalled-resume) extra="; stalled cut-offs $(metric quicksilver_stalled_writer_disconnections_total), unbatched frames $(metric quicksilver_replay_unbatched_frames_total)" ;;
        pipelining) extra="; write-stalled $(metric quicksilver_connections_write_stalled_total)" ;;
    esac
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    fds="$(cat "$work/fds" 2>/dev/null || echo 0)"
    got="opened $(sum_field "$work/attack-all" opened), 2xx $(sum_field "$work/attack-all" 2xx), 4xx $(sum_field "$work/attack-all" 4xx), 503 $(sum_field "$work/attack-all" 503), closed by the hub $(sum_field "$work/attack-all" closed_by_hub)$extra"
    during_published="$(json_field "$during" published)"
    printf '| %s | %s × %s | %s | %s MiB | %s | %s / %s ms | %s / %s ms (%s published) | %s | %s |\n' \
        "$attack" "$connections" "$kind" "${flags[*]:-defaults}" "$(( rss_kb / 1024 ))" "$fds" \
        "$(json_field "$idle" p50_ms)" "$(json_field "$idle" p99_ms)" \
        "$(json_field "$during" p50_ms)" "$(json_field "$during" p99_ms)" "$during_published" \
        "$(json_field "$during" lost)" "$got" >>"$out"
    tail -1 "$out" >&2
    stop_hub
done

echo "table: $out" >&2
cat "$out"
