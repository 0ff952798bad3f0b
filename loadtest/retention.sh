#!/usr/bin/env bash
# What retention per topic costs: one Quicksilver node over one redis-server (no persistence),
# run without rules and with two rule sets, the same load each time (loadtest `topics`: 100 topics
# `https://example.com/t/<k>/u`, one subscriber each, updates of 200 bytes).
#
#   none     no [[retention]] rules: the partition's stream is the history (--history-size 1000)
#   class    every topic in one rule, length 1000, max_age 1h: a history stream beside the
#            partition's (the worst case: every update stored twice, trimmed by length and age)
#   zero     every topic in one rule of length 0: no history at all
#   split    three rules over a third of the topics (t/1*: length 2000; t/2*: length 500, max_age
#            1h; t/3*: length 0), the rest in the global history: four classes
#
# For each: the publish rate the node sustained (lanes publish back to back), the node's and
# Redis's CPU time per update (utime + stime from /proc) and the script's or XADD's own time
# (INFO commandstats), Redis memory once the histories are full (MEMORY USAGE of each stream key,
# used_memory), and the Redis commands a resume costs when the node's tail caches cannot answer it
# (a second node with --history-cache-size 2: XREVRANGE and EVAL calls per resume, by selector).
# Writes loadtest/results/retention-<date>.md.
#
#   loadtest/retention.sh          # DURATION=15 PUBLISHERS=8 RATE=20000 UPDATES_FOR_MEMORY=5000
#
# Needs target/release/quicksilver and target/release/quicksilver-loadtest (or BIN=dir),
# redis-server, redis-cli, curl, jq.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
DURATION=${DURATION:-15}
PUBLISHERS=${PUBLISHERS:-8}
RATE=${RATE:-20000}
CONFIGS=${CONFIGS:-none class zero split}
KEY='!ChangeThisMercureHubJWTSecretKey!'
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-$ROOT/loadtest/results/retention-$DATE.md}
WORK=$(mktemp -d /tmp/qs-retention.XXXXXX)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
TICKS=$(getconf CLK_TCK)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}" $(cat "$WORK"/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cmdstat() { # cmdstat <port> <command> <field>
    local value
    value=$(redis-cli -p "$1" info commandstats | tr -d '\r' | sed -n "s/^cmdstat_$2://p" |
        tr ',' '\n' | sed -n "s/^$3=//p")
    echo "${value:-0}"
}
wait_line() { # wait_line <file> <text>
    for _ in $(seq 1 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1" >&2; return 1
}
rules() {
    case $1 in
        none) : ;;
        class) printf '[[retention]]\ntopics = ["https://example.com/t/{k}/u"]\nlength = 1000\nmax_age = "1h"\n' ;;
        zero) printf '[[retention]]\ntopics = ["https://example.com/t/{k}/u"]\nlength = 0\n' ;;
        split)
            printf '[[retention]]\ntopics = ["https://example.com/t/1{+x}"]\nlength = 2000\n'
            printf '[[retention]]\ntopics = ["https://example.com/t/2{+x}"]\nlength = 500\nmax_age = "1h"\n'
            printf '[[retention]]\ntopics = ["https://example.com/t/3{+x}"]\nlength = 0\n'
            ;;
    esac
}
start_node() { # start_node <name> <redis port> <config> [extra args…]: prints the node's URL
    local name=$1 rport=$2 config=$3 port
    shift 3
    port=$(free_port)
    "$BIN/quicksilver" --listen "127.0.0.1:$port" --jwt-key "$KEY" --anonymous \
        --transport redis --redis-url "redis://127.0.0.1:$rport" --history-size 1000 \
        --config "$config" "$@" >"$WORK/$name.log" 2>&1 &
    echo "$!" >"$WORK/$name.pid"
    wait_line "$WORK/$name.log" "listening" >&2
    echo "http://127.0.0.1:$port"
}

throughput=()
memory=()
resumes=()
for config in $CONFIGS; do
    echo "== $config" >&2
    rport=$(free_port)
    redis-server --port "$rport" --save '' --appendonly no --daemonize no \
        >"$WORK/redis-$config.log" 2>&1 &
    redis_pid=$!
    PIDS+=("$redis_pid")
    for _ in $(seq 1 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    rules "$config" >"$WORK/$config.toml"
    url=$(start_node "$config" "$rport" "$WORK/$config.toml")
    # Counters cover the measured run: from after the warm-up's connections to the end.
    (
        sleep 4
        redis-cli -p "$rport" config resetstat >/dev/null
        cpu_ticks "$redis_pid" >"$WORK/$config.cpu0"
        cpu_ticks "$(cat "$WORK/$config.pid")" >"$WORK/$config.node0"
    ) &
    reset_pid=$!
    "$BIN/quicksilver-loadtest" topics --topics 100 --subscribers 100 \
        --sub-url "$url/.well-known/mercure" --pub-url "$url/.well-known/mercure" \
        --rate "$RATE" --publishers "$PUBLISHERS" --payload-bytes 200 --warmup 3 \
        --duration "$DURATION" --jwt-key "$KEY" --tolerate-errors --quiet \
        --json-out "$WORK/$config.json" >"$WORK/$config.txt" 2>&1 || true
    wait "$reset_pid"
    cpu=$(($(cpu_ticks "$redis_pid") - $(cat "$WORK/$config.cpu0")))
    node_cpu=$(($(cpu_ticks "$(cat "$WORK/$config.pid")") - $(cat "$WORK/$config.node0")))
    stored=$(($(cmdstat "$rport" xadd calls) + $(cmdstat "$rport" eval calls)))
    own_usec=$(($(cmdstat "$rport" xadd usec) + $(cmdstat "$rport" eval usec)))
    rate=$(jq -r '.publish.achieved_rate' "$WORK/$config.json")
    lost=$(jq -r '(.delivery.lost + .delivery.duplicated + .delivery.out_of_order) | tostring' \
        "$WORK/$config.json" 2>/dev/null || echo "run failed")
    throughput+=("$(awk -v c="$config" -v r="$rate" -v cpu="$cpu" -v t="$TICKS" -v n="$stored" \
        -v own="$own_usec" -v lost="$lost" -v node="$node_cpu" 'BEGIN {
            per = 0; o = 0; nd = 0
            if (n > 0) { per = cpu / t * 1e6 / n; o = own / n; nd = node / t * 1e6 / n }
            printf "| %s | %.0f | %.1f | %.1f | %.1f | %s |", c, r, nd, per, o, lost }')")

    # Memory once full: every stream key (no other keys matter here).
    keys=$(redis-cli -p "$rport" --scan --pattern '*' | sort)
    detail=""
    total=0
    for k in $keys; do
        [ "$(redis-cli -p "$rport" type "$k")" = "stream" ] || continue
        bytes=$(redis-cli -p "$rport" memory usage "$k" samples 0)
        len=$(redis-cli -p "$rport" xlen "$k")
        total=$((total + bytes))
        detail+="\`$k\` $len entries $((bytes / 1024)) KiB; "
    done
    used=$(redis-cli -p "$rport" info memory | tr -d '\r' | sed -n 's/^used_memory://p')
    memory+=("| $config | $((total / 1024)) | $((used / 1024)) | ${detail%; } |")

    # Resumes that the tail caches cannot answer: a second node with a tiny cache.
    cold=$(start_node "$config-cold" "$rport" "$WORK/$config.toml" --history-cache-size 2)
    for selector in "https://example.com/t/7/u" "https://example.com/t/15/u" \
        "https://example.com/t/{k}/u" "*"; do
        # Resume from an id that is not retained: the scan reads every stream the selector may
        # need, then answers `earliest`.
        redis-cli -p "$rport" config resetstat >/dev/null
        curl -s -o /dev/null --max-time 2 -G "$cold/.well-known/mercure" \
            --data-urlencode "topic=$selector" -H "Last-Event-ID: not-retained" || true
        xrev=$(cmdstat "$rport" xrevrange calls)
        evals=$(cmdstat "$rport" eval calls)
        resumes+=("| $config | \`$selector\` | $xrev | $evals |")
    done
    kill "$(cat "$WORK/$config-cold.pid")" "$(cat "$WORK/$config.pid")" "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
done

mkdir -p "$(dirname "$OUT")"
{
    echo "# What retention per topic costs — $DATE"
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
    echo "$(uname -sr); load average when the run started: $LOAD_BEFORE (the machine was shared)."
    echo "One node and one redis-server (no persistence), unpinned; loadtest \`topics\`: 100 topics, one"
    echo "subscriber each, $PUBLISHERS lanes publishing back to back (target $RATE/s), 200-byte payloads, ${DURATION} s."
    echo "Rules: none; \`class\`: every topic in one rule of length 1000, max_age 1h; \`zero\`: every topic"
    echo "in one rule of length 0; \`split\`: t/1* length 2000, t/2* length 500 and max_age 1h, t/3* length 0"
    echo "(11 topics each), the other 67 topics in the global history. Global history: --history-size 1000."
    echo
    echo "Command: \`DURATION=$DURATION PUBLISHERS=$PUBLISHERS RATE=$RATE loadtest/retention.sh\`"
    echo
    echo "## Publishing"
    echo
    echo "| rules | publishes/s | node CPU µs / update (all its work) | Redis CPU µs / update | XADD or script µs / update (commandstats) | lost + dup + out of order |"
    echo "|---|---:|---:|---:|---:|---:|"
    printf '%s\n' "${throughput[@]}"
    echo
    echo "## Redis memory once the histories are full"
    echo
    echo "| rules | streams KiB | used_memory KiB | streams |"
    echo "|---|---:|---:|---|"
    printf '%s\n' "${memory[@]}"
    echo
    echo "## Redis commands per resume the tail caches cannot answer"
    echo
    echo "A second node with \`--history-cache-size 2\`; one resume from an id no longer retained."
    echo
    echo "| rules | selector | XREVRANGE calls | EVAL calls |"
    echo "|---|---|---:|---:|"
    printf '%s\n' "${resumes[@]}"
} >"$OUT"
cat "$OUT"
echo "raw reports: $WORK" >&2
