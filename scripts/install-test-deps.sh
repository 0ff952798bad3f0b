#!/usr/bin/env bash
# Installs what the test suite needs and is not part of a fresh machine, and nothing when it is all there.
#
# - Debian packages: redis-server and redis-tools (RedisServer/RedisCluster in crates/testkit), docker-compose
#   (validates docker-compose.cluster.yml without an engine), nginx (the
#   cluster topology tests), chromium (browser tests, driven by playwright-core; Playwright's own browser
#   download cannot work here), nodejs and npm only when `node`/`npm` are missing.
# - npm packages of tests/browser (playwright-core, pinned by its package-lock.json), when its node_modules is
#   missing or older than the lock file.
#
# Idempotent: `apt-get update` runs at most once, and only when a package is missing. Works as root (no sudo
# needed) and as a user with sudo. Package installs do not start services: redis-server's and nginx's
# packages would otherwise start daemons on ports 6379 and 80; tests start their own on free ports.
# Plain `cargo test` is the test runner: nothing here installs cargo-nextest.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ "$(id -u)" -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install-test-deps: not root and no sudo; cannot install Debian packages" >&2
    exit 1
fi

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for pkg in redis-server redis-tools nginx chromium docker-compose; do
    is_installed "$pkg" || missing+=("$pkg")
done
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if ((${#missing[@]} > 0)); then
    echo "install-test-deps: installing ${missing[*]}"
    # Keep the packages' maintainer scripts from starting services (exit 101 = "action forbidden"), unless
    # the machine already has its own policy, which is then left alone.
    policy=/usr/sbin/policy-rc.d
    own_policy=false
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
        "${as_root[@]}" chmod 755 "$policy"
        own_policy=true
    fi
    remove_policy() { if $own_policy; then "${as_root[@]}" rm -f "$policy"; fi; }
    trap remove_policy EXIT
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    remove_policy
    trap - EXIT
else
    echo "install-test-deps: Debian packages present"
fi

browser_dir="$repo_root/tests/browser"
marker="$browser_dir/node_modules/.package-lock.json"
if [[ ! -e "$marker" || "$browser_dir/package-lock.json" -nt "$marker" ]]; then
    echo "install-test-deps: npm ci in tests/browser"
    (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
else
    echo "install-test-deps: tests/browser node_modules present"
fi
