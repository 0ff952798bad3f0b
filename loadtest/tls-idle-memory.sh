#!/usr/bin/env bash
# Idle subscriber memory over TLS: starts one Quicksilver node serving HTTPS (`--tls-cert`, a
# self-signed certificate made here with openssl) and one serving plain HTTP, holds N idle
# subscribers open on each (HTTP/1.1: the lean path; over TLS, ALPN `http/1.1`), and prints each
# node's RSS growth per subscriber. The subscribers come from one Python asyncio process (the
# load generator has no TLS client), which is why N stays in the thousands.
#
#   loadtest/tls-idle-memory.sh [N=5000] [HUB_BINARY=target/release/quicksilver]
#
# The hubs run on core 0, the client on core 1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-5000}
HUB=${2:-$ROOT/target/release/quicksilver}
KEY='!ChangeThisMercureHubJWTSecretKey!'
OUT=$(mktemp -d /tmp/qs-tls-idle.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() {
    for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    echo "nothing listens on $1" >&2
    return 1
}
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }

# Holds N subscribers to URL's host and port (over TLS when SCHEME is https) until every one has
# its response head, then prints "ready" and waits for standard input to close.
cat >"$OUT/hold.py" <<'EOF'
import asyncio, ssl, sys
scheme, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
context = None
if scheme == "https":
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
held = []
async def subscriber(i, gate):
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        writer.write(f"GET /.well-known/mercure?topic=t{i % 100} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        held.append((reader, writer))
async def main():
    gate = asyncio.Semaphore(200)
    await asyncio.gather(*(subscriber(i, gate) for i in range(n)))
    print("ready", len(held), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
EOF

measure() {
    local scheme=$1 port pid base
    port=$(free_port)
    local tls=()
    [ "$scheme" = https ] && tls=(--tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem")
    taskset -c 0 "$HUB" --listen "127.0.0.1:$port" --jwt-key "$KEY" --anonymous --log warn \
        --max-connections 0 --header-read-timeout 60s "${tls[@]}" >"$OUT/hub-$scheme.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port"
    sleep 1
    base=$(rss "$pid")
    mkfifo "$OUT/hold-$scheme"
    taskset -c 1 python3 "$OUT/hold.py" "$scheme" "$port" "$N" <"$OUT/hold-$scheme" >"$OUT/client-$scheme.log" 2>&1 &
    local client=$!
    exec 3>"$OUT/hold-$scheme"
    for _ in $(seq 1 600); do grep -q ready "$OUT/client-$scheme.log" && break; sleep 0.5; done
    if ! grep -q ready "$OUT/client-$scheme.log"; then
        echo "$scheme: the subscribers did not all connect:" >&2
        tail -5 "$OUT/client-$scheme.log" >&2
        exit 1
    fi
    sleep 2
    local held
    held=$(rss "$pid")
    exec 3>&-
    wait "$client" || true
    kill "$pid"
    awk -v s="$scheme" -v b="$base" -v h="$held" -v n="$N" \
        'BEGIN { printf "%s: %d idle subscribers, RSS %d KiB -> %d KiB, %.2f KiB per subscriber\n", s, n, b, h, (h - b) / n }'
}

echo "hub $HUB (files: $OUT)"
measure http
measure https
