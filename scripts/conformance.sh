#!/usr/bin/env bash
# Runs the reference Mercure conformance suite (conformance-tests/ in dunglas/mercure, Playwright)
# against Quicksilver: a single node and/or a 3-node cluster behind nginx (scripts/cluster.sh),
# with the suites of the repository's head and of tag v1.0.0-alpha.3 (current specification) and
# of tag v0.24.2 (pre-standardization protocol). The suite's code is never copied into this repository: it is
# extracted with `git archive` into .tmp/conformance/ and run with tests/conformance/playwright.config.cjs.
#
# Needs: a copy of https://github.com/dunglas/mercure (a full clone, so that the tags are
# there: `git clone https://github.com/dunglas/mercure /some/where/mercure`; a bare mirror works
# too), named with --mercure-repo or MERCURE_REPO,
# node + npm (the npm registry, for `npm ci`), Chromium at /usr/bin/chromium (CHROMIUM_PATH;
# Playwright's own browsers are not downloaded), and for the cluster redis-server and nginx.
usage() {
    cat <<'USAGE'
usage: scripts/conformance.sh [--version head|v1.0.0-alpha.3|v0.24.2|all] [--topology single|cluster|both]
                              [--mercure-repo PATH] [--redis-cluster] [--no-build] [--quiet]

  --version       suite to run: `head` (the repository's head), `v1.0.0-alpha.3` (current spec, 10
                  tests each) or `v0.24.2` (pre-standardization, 11 tests); repeatable [all three]
  --topology      `single` (one node, in-memory transport) or `cluster` (3 nodes + Redis + nginx
                  via scripts/cluster.sh) [both]
  --mercure-repo  a clone (or bare mirror) of https://github.com/dunglas/mercure [$MERCURE_REPO];
                  required. Get one with: git clone https://github.com/dunglas/mercure PATH
  --redis-cluster cluster topology on a 3-master Redis Cluster instead of one Redis
  --no-build      do not run `cargo build --release --bin quicksilver` first
  --quiet         do not stream Playwright's output (it is kept in .tmp/conformance/logs/)

Environment: QUICKSILVER_BIN (binary to use as is, implies --no-build), CHROMIUM_PATH,
MERCURE_JWT_KEY (default: the demo key the suite signs with). Exit status: non-zero if any run
failed. Every process started is stopped on exit.
USAGE
}
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$repo_root/.tmp/conformance"
config="$repo_root/tests/conformance/playwright.config.cjs"
jwt_key="${MERCURE_JWT_KEY:-!ChangeThisMercureHubJWTSecretKey!}"
# The HEAD suite's publisher token: typ at+jwt, iss https://localhost, aud = this resource.
issuer="https://localhost"
resource="https://localhost/.well-known/mercure"

versions=(head v1.0.0-alpha.3 v0.24.2)
versions_given=false
topologies=(single cluster)
mercure_repo="${MERCURE_REPO:-}"
redis_cluster=false
build=true
quiet=false
[[ -n "${QUICKSILVER_BIN:-}" ]] && build=false

while [[ $# -gt 0 ]]; do
    case "$1" in
        --version)
            $versions_given || versions=()
            versions_given=true
            case "${2:-}" in
                head | v1.0.0-alpha.3 | v0.24.2) versions+=("$2") ;;
                all) versions+=(head v1.0.0-alpha.3 v0.24.2) ;;
                both) versions+=(head v0.24.2) ;;
                *) usage >&2; exit 2 ;;
            esac
            shift 2 ;;
        --topology)
            case "${2:-}" in
                single | cluster) topologies=("$2") ;;
                both) topologies=(single cluster) ;;
                *) usage >&2; exit 2 ;;
            esac
            shift 2 ;;
        --mercure-repo) mercure_repo="${2:?--mercure-repo needs a path}"; shift 2 ;;
        --redis-cluster) redis_cluster=true; shift ;;
        --no-build) build=false; shift ;;
        --quiet) quiet=true; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

if [[ -z "$mercure_repo" ]] || ! git -C "$mercure_repo" rev-parse --git-dir >/dev/null 2>&1; then
    echo "conformance: name a clone of the reference hub with --mercure-repo PATH (or MERCURE_REPO);" >&2
    echo "get one with: git clone https://github.com/dunglas/mercure PATH" >&2
    exit 2
fi

bin="${QUICKSILVER_BIN:-$repo_root/target/release/quicksilver}"
if $build; then
    (cd "$repo_root" && cargo build --release --bin quicksilver)
fi
[[ -x "$bin" ]] || { echo "conformance: no binary at $bin" >&2; exit 2; }

hub_args=(--anonymous)
if "$bin" --help 2>/dev/null | grep -q -- '--issuer' && "$bin" --help 2>/dev/null | grep -q -- '--resource-identifier'; then
    hub_args+=(--issuer "$issuer" --resource-identifier "$resource")
else
    echo "conformance: warning: $bin has no --issuer/--resource-identifier; the head suite's at+jwt token will be refused" >&2
fi

free_port() { # a TCP port nobody listens on right now
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

redis_cluster_port() { # three consecutive free ports, and their cluster bus ports (+10000), under 55536
    python3 - <<'PY'
import random, socket
def free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(1000):
    base = random.randint(20000, 55533)
    if all(free(p) for p in (base, base + 1, base + 2, base + 10000, base + 10001, base + 10002)):
        print(base)
        break
PY
}

wait_http() { # wait_http <url>: retry for 10 s
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    return 1
}

# --- cleanup of whatever this run started -------------------------------------------------------
node_pid=""
cluster_dir=""
cleanup() {
    if [[ -n "$node_pid" ]] && kill -0 "$node_pid" 2>/dev/null; then
        kill -TERM "$node_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$node_pid" 2>/dev/null || true
    fi
    node_pid=""
    if [[ -n "$cluster_dir" ]]; then
        CLUSTER_DIR="$cluster_dir" "$repo_root/scripts/cluster.sh" down >/dev/null 2>&1 || true
    fi
    cluster_dir=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the suite: extract, npm ci (cached by the lock file) -----------------------------------------
prepare_suite() { # prepare_suite <version> -> prints the suite's directory
    local version="$1" ref dir
    case "$version" in head) ref=HEAD ;; *) ref="$version" ;; esac
    dir="$work/suite-$version"
    rm -rf "$dir/conformance-tests.new"
    mkdir -p "$dir/conformance-tests.new"
    git -C "$mercure_repo" archive "$ref" conformance-tests | tar -x -C "$dir/conformance-tests.new" --strip-components=1
    local suite="$dir/conformance-tests"
    mkdir -p "$suite"
    # Fresh sources every run, node_modules kept while package-lock.json is unchanged.
    find "$suite" -mindepth 1 -maxdepth 1 ! -name node_modules ! -name .lock-installed -exec rm -rf {} +
    cp -a "$dir/conformance-tests.new/." "$suite/"
    rm -rf "$dir/conformance-tests.new"
    local lock_sum; lock_sum=$(sha256sum "$suite/package-lock.json" | cut -d' ' -f1)
    if [[ ! -d "$suite/node_modules" ]] || [[ "$(cat "$suite/.lock-installed" 2>/dev/null)" != "$lock_sum" ]]; then
        (cd "$suite" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >&2)
        echo "$lock_sum" >"$suite/.lock-installed"
    fi
    echo "$suite"
}

# --- hubs ---------------------------------------------------------------------------------------
start_single() { # sets base_url
    local port; port=$(free_port)
    local log="$work/logs/node-single.log"
    MERCURE_JWT_KEY="$jwt_key" "$bin" --listen "127.0.0.1:$port" "${hub_args[@]}" >"$log" 2>&1 &
    node_pid=$!
    wait_http "http://127.0.0.1:$port/healthz" || { echo "conformance: node did not come up (see $log)" >&2; return 1; }
    base_url="http://127.0.0.1:$port/.well-known/mercure"
}

start_cluster() { # sets base_url (nginx)
    local nginx_port p1 p2 p3 redis_port up_args=()
    nginx_port=$(free_port); p1=$(free_port); p2=$(free_port); p3=$(free_port)
    if $redis_cluster; then redis_port=$(redis_cluster_port); else redis_port=$(free_port); fi
    $redis_cluster && up_args+=(--redis-cluster)
    cluster_dir="$work/cluster"
    CLUSTER_DIR="$cluster_dir" "$repo_root/scripts/cluster.sh" down >/dev/null 2>&1 || true
    rm -rf "$cluster_dir"
    CLUSTER_DIR="$cluster_dir" QUICKSILVER_BIN="$bin" NGINX_PORT="$nginx_port" NODE_PORTS="$p1 $p2 $p3" \
        REDIS_PORT="$redis_port" MERCURE_JWT_KEY="$jwt_key" QUICKSILVER_EXTRA_ARGS="${hub_args[*]}" \
        "$repo_root/scripts/cluster.sh" up "${up_args[@]}" >&2
    base_url="http://127.0.0.1:$nginx_port/.well-known/mercure"
}

# --- runs ---------------------------------------------------------------------------------------
mkdir -p "$work/logs"
results=()
status=0
for version in "${versions[@]}"; do
    suite=$(prepare_suite "$version")
    for topology in "${topologies[@]}"; do
        name="$version/$topology"
        log="$work/logs/playwright-$version-$topology.log"
        echo "=== conformance $name ===" >&2
        if [[ "$topology" == single ]]; then start_single; else start_cluster; fi
        echo "hub: $base_url" >&2
        rc=0
        if $quiet; then
            (cd "$suite" && BASE_URL="$base_url" CUSTOM_ID=1 CONFORMANCE_TEST_DIR="$suite" \
                CONFORMANCE_OUTPUT="$work/test-results/$version-$topology" \
                ./node_modules/.bin/playwright test --config "$config" --project chromium) >"$log" 2>&1 || rc=$?
        else
            (cd "$suite" && BASE_URL="$base_url" CUSTOM_ID=1 CONFORMANCE_TEST_DIR="$suite" \
                CONFORMANCE_OUTPUT="$work/test-results/$version-$topology" \
                ./node_modules/.bin/playwright test --config "$config" --project chromium) 2>&1 | tee "$log" || rc=$?
        fi
        cleanup
        # Playwright's summary: "N passed (Xs)", "N failed", "N flaky", ... (colours stripped).
        summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^ +[0-9]+ (passed|failed|flaky|skipped|interrupted|did not run)' \
            | sed 's/^ *//' | paste -sd ',' - | sed 's/,/, /g')
        [[ -z "$summary" ]] && summary="no result (see $log)"
        if [[ $rc -ne 0 ]]; then
            status=1
            # Failing tests' titles (after the last "›", without the rule) and their distinct errors.
            failed=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^ +[0-9]+\) \[' \
                | sed -E 's/.*› //; s/ *─+ *$//' | paste -sd ';' - | sed 's/;/; /g')
            errors=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^ +(Error|TimeoutError)' | sed 's/^ *//' \
                | sort | uniq -c | sort -rn | head -5 | sed -E 's/^ *([0-9]+) /    \1× /')
            results+=("FAIL $name: $summary${failed:+ -- failed: $failed}")
            [[ -n "$errors" ]] && results+=("$errors")
        else
            results+=("ok   $name: $summary")
        fi
    done
done

echo
echo "conformance results (logs in $work/logs):"
printf '  %s\n' "${results[@]}"
exit "$status"
