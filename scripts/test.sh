#!/usr/bin/env bash
# The one test command: installs what the tests need (scripts/install-test-deps.sh), then checks formatting,
# lints every target with warnings as errors, and runs every test of the workspace with plain `cargo test`.
#
# Every step runs even when an earlier one fails, so one run shows all problems; the exit status is non-zero
# if any step failed. Output is not filtered: cargo's own test summaries are the record of what ran.
# Usage: scripts/test.sh [extra `cargo test` arguments, e.g. -p quicksilver-testkit]
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

# Installing is a precondition: without it the tests cannot mean anything, so stop here if it fails.
if ! scripts/install-test-deps.sh; then
    echo "test.sh: installing test dependencies failed" >&2
    exit 1
fi

# CI builds from a fresh clone: incremental compilation only costs time there, and line tables keep
# backtraces readable at a fraction of full debug info's compile and link time. Developers' runs keep their
# usual settings so they share the build cache with plain `cargo` commands.
if [[ "${CI:-}" == "true" ]]; then
    export CARGO_INCREMENTAL=0
    export CARGO_PROFILE_DEV_DEBUG=line-tables-only
    export CARGO_TERM_COLOR=never
fi

failed=()
step() {
    local name="$1"
    shift
    echo
    echo "==> $name: $*"
    local started=$SECONDS
    if "$@"; then
        echo "==> $name: ok ($((SECONDS - started)) s)"
    else
        echo "==> $name: FAILED ($((SECONDS - started)) s)" >&2
        failed+=("$name")
    fi
}

step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step test cargo test --workspace "$@"
# The chart and manifests, checked against the flags of the binary the tests just built.
step deploy env QUICKSILVER_BIN="$repo_root/target/debug/quicksilver" scripts/validate-deploy.sh

echo
if ((${#failed[@]} > 0)); then
    echo "test.sh: FAILED steps: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: fmt, clippy and tests all succeeded"
