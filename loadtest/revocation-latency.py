#!/usr/bin/env python3
"""How long a revocation takes to reach another node.

Starts a redis-server and two Quicksilver nodes sharing it (revocation on), then ROUNDS times:
mints a subscriber token for a new subject, checks node B accepts it, revokes the subject through
node A (`POST /.well-known/mercure/admin/revocations`), and polls node B every millisecond until
it refuses the token. Prints the time from A's answer to B's first refusal, and how long A took
to answer.

    loadtest/revocation-latency.py [ROUNDS=20] [HUB_BINARY=target/release/quicksilver]
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
HUB = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "target/release/quicksilver")
KEY = "!ChangeThisMercureHubJWTSecretKey!"
ADMIN_KEY = "revocation latency admin key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(key, claims):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def status(port, method, path, token, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=headers)
    code = conn.getresponse().status
    conn.close()
    return code


def main():
    procs = []
    tmp = tempfile.mkdtemp(prefix="qs-revocation-")
    try:
        redis_port = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no",
             "--bind", "127.0.0.1", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(redis_port)
        ports = []
        for _ in range(2):
            port = free_port()
            procs.append(subprocess.Popen(
                [HUB, "--listen", f"127.0.0.1:{port}", "--jwt-key", KEY, "--log", "warn",
                 "--transport", "redis", "--redis-url", f"redis://127.0.0.1:{redis_port}",
                 "--admin-jwt-key", ADMIN_KEY],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
            ports.append(port)
        a, b = ports
        time.sleep(1)
        spread, answer = [], []
        for i in range(ROUNDS):
            now = int(time.time())
            token = hs256(KEY, {"mercure": {"subscribe": ["*"]}, "sub": f"user-{i}",
                                "iat": now - 5, "exp": now + 3600})
            path = "/.well-known/mercure?topic=t"
            assert status(b, "GET", path, token) == 200
            admin = hs256(ADMIN_KEY, {"scope": "revocations", "exp": now + 60})
            started = time.monotonic()
            code = status(a, "POST", "/.well-known/mercure/admin/revocations", admin,
                          json.dumps({"sub": f"user-{i}"}))
            answered = time.monotonic()
            assert code == 201, code
            while status(b, "GET", path, token) != 401:
                time.sleep(0.001)
                if time.monotonic() - answered > 5:
                    raise SystemExit("node B did not refuse the token within 5 s")
            spread.append((time.monotonic() - answered) * 1000)
            answer.append((answered - started) * 1000)
            time.sleep(0.1)
        q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]
        print(f"{ROUNDS} revocations through node A, refused by node B after (from A's answer): "
              f"median {statistics.median(spread):.0f} ms, p90 {q(spread, 0.9):.0f} ms, "
              f"max {max(spread):.0f} ms")
        print(f"node A answered (stored in Redis, in force on A) in: median "
              f"{statistics.median(answer):.1f} ms, max {max(answer):.1f} ms")
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()
