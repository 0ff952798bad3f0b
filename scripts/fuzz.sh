#!/usr/bin/env bash
# Runs the cargo-fuzz targets under fuzz/ for a fixed time each and reports, per target, how many
# inputs were executed and whether anything was found.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Defaults: 600 seconds, every target (`cargo fuzz list`). Each target starts from a scratch copy
# of its committed seeds (fuzz/corpus/<target>) in fuzz/corpus-run/<target>, which keeps the
# corpus grown by earlier runs and is not versioned. Crashes land in fuzz/artifacts/<target>/.
# Exits non-zero if any target found something (crash, failed property, timeout, OOM).
#
# Stable toolchain: cargo-fuzz needs nightly-only compiler flags, so RUSTC_BOOTSTRAP=1 is set.
# `-O` with the fuzz crate's release profile keeps debug assertions and overflow checks on (see
# fuzz/Cargo.toml). No sanitizer: the crates under test forbid `unsafe`, so AddressSanitizer would only slow the
# search down. FUZZ_JOBS (default 1) runs that many fuzzing processes per target.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
export RUSTC_BOOTSTRAP=1
jobs="${FUZZ_JOBS:-1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

cargo fuzz build --fuzz-dir fuzz -O --sanitizer none

mkdir -p fuzz/corpus-run fuzz/logs
failed=0
printf '%-16s %14s %10s %9s  %s\n' target executions coverage features result
for target in "${targets[@]}"; do
    run="fuzz/corpus-run/$target"
    mkdir -p "$run" "fuzz/artifacts/$target"
    cp -n fuzz/corpus/"$target"/* "$run"/ 2>/dev/null || true
    log="fuzz/logs/$target.log"
    # Token targets must be able to exceed the 16 KiB token limit; other inputs stay smaller.
    max_len=8192
    [[ "$target" == jwt_* ]] && max_len=20000
    # -jobs=1 would still switch libFuzzer to its job mode (a child process logging to a file).
    parallel=()
    [ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
    status=0
    cargo fuzz run --fuzz-dir fuzz -O --sanitizer none "$target" "$run" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
        "${parallel[@]}" -print_final_stats=1 >"$log" 2>&1 || status=$?
    # With -jobs, libFuzzer writes each worker's output to fuzz-<n>.log in the working directory.
    if [ "$jobs" -gt 1 ]; then
        cat fuzz-*.log >>"$log" 2>/dev/null || true
        rm -f fuzz-*.log
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
    last=$(grep -E '#[0-9]+.*(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 || true)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
    if [ "$status" -ne 0 ] || grep -qE '^(==[0-9]+== ERROR|SUMMARY: libFuzzer)|panicked at' "$log"; then
        result="FOUND (exit $status, see $log and fuzz/artifacts/$target/)"
        failed=1
    else
        result="clean"
    fi
    printf '%-16s %14s %10s %9s  %s\n' "$target" "$execs" "${cov:-?}" "${ft:-?}" "$result"
done
exit "$failed"
